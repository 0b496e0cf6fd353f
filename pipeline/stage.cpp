// The defaults of Stage: split backward and the FB unit fall back to the full,
// sequential calls, so a stage that implements only forward and backward runs
// every schedule (without the zero-bubble and overlap savings); a stage that
// cuts its halves into Pieces gets them alternated inside FB units.
#include <epx/pipeline.hpp>

namespace epx::pipeline {

Stage::~Stage() = default;

Tensor Stage::backward_input(int chunk, int mb, const Tensor& grad_output) {
  return backward(chunk, mb, grad_output);
}

void Stage::backward_weight(int, int) {}

Pieces::~Pieces() = default;

std::unique_ptr<Pieces> Stage::forward_pieces(int, int, const Tensor&) {
  return nullptr;
}

std::unique_ptr<Pieces> Stage::backward_pieces(int, int, const Tensor&) {
  return nullptr;
}

Tensor Stage::forward_backward(int f_chunk, int f_mb, const Tensor& input, int b_chunk, int b_mb,
                               const Tensor& grad_output, Tensor& grad_input) {
  std::unique_ptr<Pieces> f = forward_pieces(f_chunk, f_mb, input);
  std::unique_ptr<Pieces> b = backward_pieces(b_chunk, b_mb, grad_output);
  // Alternate while both have pieces left, then finish whichever remains.
  bool f_more = f != nullptr;
  bool b_more = b != nullptr;
  while (f_more || b_more) {
    if (f_more) f_more = f->run_next();
    progress();
    if (b_more) b_more = b->run_next();
    progress();
  }
  Tensor output = f ? f->result() : forward(f_chunk, f_mb, input);
  grad_input = b ? b->result() : backward(b_chunk, b_mb, grad_output);
  return output;
}

std::vector<Tensor> Stage::weight_grads(int) {
  return {};
}

void Stage::progress() {
  if (progress_) progress_();
}

}  // namespace epx::pipeline
