// AdamW as torch.optim.AdamW orders it: the step's scalars once in double,
// then f32 per element.
#include <cmath>

#include <epx/model_kernels.hpp>

#include "core/check.hpp"

namespace epx::kernels {

AdamWScalars adamw_scalars(double lr_t, double beta1, double beta2, double eps,
                           double weight_decay, std::int64_t t) {
  EPX_CHECK_GE(t, std::int64_t{1}, InvalidArgument, "adamw_scalars: step t");
  const double td = static_cast<double>(t);
  AdamWScalars s;
  s.beta1 = static_cast<float>(beta1);
  s.beta2 = static_cast<float>(beta2);
  s.one_minus_beta1 = static_cast<float>(1.0 - beta1);
  s.one_minus_beta2 = static_cast<float>(1.0 - beta2);
  s.eps = static_cast<float>(eps);
  s.decay = static_cast<float>(1.0 - lr_t * weight_decay);
  s.step_size = static_cast<float>(lr_t / (1.0 - std::pow(beta1, td)));
  s.bias_correction2_sqrt = static_cast<float>(std::sqrt(1.0 - std::pow(beta2, td)));
  return s;
}

void adamw_step(float* p, float* m, float* v, const float* g, std::int64_t n,
                const AdamWScalars& s) {
  // Element-wise and independent: the loop vectorises (sqrtf is exact in SIMD too).
  for (std::int64_t i = 0; i < n; ++i) {
    const float gi = g[i];
    const float mi = s.beta1 * m[i] + s.one_minus_beta1 * gi;
    const float vi = s.beta2 * v[i] + s.one_minus_beta2 * gi * gi;
    m[i] = mi;
    v[i] = vi;
    p[i] = p[i] * s.decay - s.step_size * (mi / (sqrtf(vi) / s.bias_correction2_sqrt + s.eps));
  }
}

}  // namespace epx::kernels
