// Cross-entropy over the vocabulary, per row, with the log-sum-exp saved.
#include <cmath>

#include <epx/model_kernels.hpp>

#include "core/check.hpp"

namespace epx::kernels {

namespace {

void check_target(std::int32_t t, std::int64_t row, std::int64_t vocab, const char* op) {
  EPX_CHECK(t >= 0 && t < vocab, InvalidArgument, op, ": targets[", row, "] = ", t,
            ", expected in [0, vocab=", vocab, ")");
}

}  // namespace

void cross_entropy_forward(float* losses, float* lse, const float* logits,
                           const std::int32_t* targets, std::int64_t n, std::int64_t vocab) {
  for (std::int64_t r = 0; r < n; ++r) {
    check_target(targets[r], r, vocab, "cross_entropy_forward");
    const float* l = logits + r * vocab;
    float m = l[0];
    for (std::int64_t j = 1; j < vocab; ++j) m = l[j] > m ? l[j] : m;
    float sum = 0.0f;
    for (std::int64_t j = 0; j < vocab; ++j) sum += expf(l[j] - m);
    lse[r] = m + logf(sum);
    losses[r] = lse[r] - l[targets[r]];
  }
}

void cross_entropy_backward(float* dlogits, const float* logits, const float* lse,
                            const std::int32_t* targets, std::int64_t n, std::int64_t vocab,
                            float scale) {
  for (std::int64_t r = 0; r < n; ++r) {
    const std::int32_t t = targets[r];
    check_target(t, r, vocab, "cross_entropy_backward");
    const float* l = logits + r * vocab;
    float* d = dlogits + r * vocab;
    const float z = lse[r];
    const float lt = l[t];  // before the loop: dlogits may alias logits
    // (p - 0) * scale is p * scale exactly; the target gets its - 1 after.
    for (std::int64_t j = 0; j < vocab; ++j) d[j] = expf(l[j] - z) * scale;
    d[t] = (expf(lt - z) - 1.0f) * scale;
  }
}

}  // namespace epx::kernels
