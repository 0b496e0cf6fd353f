// The defaults of Stage: split backward and the FB unit fall back to the full,
// sequential calls, so a stage that implements only forward and backward runs
// every schedule (without the zero-bubble and overlap savings).
#include <epx/pipeline.hpp>

namespace epx::pipeline {

Stage::~Stage() = default;

Tensor Stage::backward_input(int chunk, int mb, const Tensor& grad_output) {
  return backward(chunk, mb, grad_output);
}

void Stage::backward_weight(int, int) {}

Tensor Stage::forward_backward(int f_chunk, int f_mb, const Tensor& input, int b_chunk, int b_mb,
                               const Tensor& grad_output, Tensor& grad_input) {
  Tensor output = forward(f_chunk, f_mb, input);
  grad_input = backward(b_chunk, b_mb, grad_output);
  return output;
}

std::vector<Tensor> Stage::weight_grads(int) {
  return {};
}

}  // namespace epx::pipeline
