// The zero-bubble split's held-back weight gradients (model/saved.hpp).
#include "model/saved.hpp"

#include <algorithm>

namespace epx::model {

float* DeferredWeightGrads::take(std::int64_t n) {
  if (used == buffers.size()) buffers.emplace_back();
  // Moving the outer vector keeps every inner buffer where it is.
  return at_least(buffers[used++], n);
}

const float* DeferredWeightGrads::keep(const float* src, std::int64_t n) {
  float* dst = take(n);
  std::copy(src, src + n, dst);
  return dst;
}

void DeferredWeightGrads::run() {
  for (const std::function<void()>& job : jobs) job();
  jobs.clear();
  used = 0;
}

void weight_grad(DeferredWeightGrads* deferred, float* dw, const float* dy, bool dy_changes,
                 const float* x, std::int64_t n, std::int64_t in, std::int64_t out) {
  if (!deferred) {
    kernels::linear_backward_weight(dw, dy, x, n, in, out);
    return;
  }
  const float* d = dy_changes ? deferred->keep(dy, n * out) : dy;
  deferred->jobs.emplace_back([=] { kernels::linear_backward_weight(dw, d, x, n, in, out); });
}

void mlp_grads(DeferredWeightGrads* deferred, float* dx, const kernels::MlpGrads& dw,
               const float* dy, const float* x, const float* saved, std::int64_t n,
               const kernels::MlpWeights& w, float* scratch, bool accumulate) {
  if (!deferred) {
    kernels::mlp_backward(dx, dw, dy, x, saved, n, w, scratch, accumulate);
    return;
  }
  float* dgu = deferred->take(2 * n * w.inter);
  kernels::mlp_backward_input(dx, dgu, dy, saved, n, w, scratch, accumulate);
  const float* d = deferred->keep(dy, n * w.hidden);
  deferred->jobs.emplace_back([=] { kernels::mlp_backward_weight(dw, d, x, saved, dgu, n, w); });
}

}  // namespace epx::model
