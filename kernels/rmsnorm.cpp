// RMSNorm forward and backward, one row of h at a time.
#include <cmath>

#include <epx/model_kernels.hpp>

#include "core/check.hpp"

namespace epx::kernels {

void rmsnorm_forward(float* y, float* rstd, const float* x, const float* w, std::int64_t n,
                     std::int64_t h, float eps) {
  EPX_CHECK(n == 0 || h > 0, InvalidArgument, "rmsnorm_forward: h = ", h, ", expected > 0");
  for (std::int64_t r = 0; r < n; ++r) {
    const float* xr = x + r * h;
    float* yr = y + r * h;
    // The sum in i order, as the header fixes (a serial chain; h is small next to the GEMMs).
    float ss = 0.0f;
    for (std::int64_t i = 0; i < h; ++i) ss += xr[i] * xr[i];
    const float s = 1.0f / sqrtf(ss / static_cast<float>(h) + eps);
    rstd[r] = s;
    for (std::int64_t i = 0; i < h; ++i) yr[i] = xr[i] * s * w[i];
  }
}

// y_i = x_i r w_i with r = (sum x^2 / h + eps)^(-1/2), dr/dx_j = -r^3 x_j / h:
//   dx_j = r (dy_j w_j - x_j r^2 (sum_i dy_i w_i x_i) / h),  dw_i += dy_i x_i r.
void rmsnorm_backward(float* dx, float* dw, const float* dy, const float* x, const float* w,
                      const float* rstd, std::int64_t n, std::int64_t h, bool accumulate) {
  for (std::int64_t r = 0; r < n; ++r) {
    const float* xr = x + r * h;
    const float* dyr = dy + r * h;
    float* dxr = dx + r * h;
    const float s = rstd[r];
    float dot = 0.0f;
    for (std::int64_t i = 0; i < h; ++i) dot += dyr[i] * w[i] * xr[i];
    const float coef = dot * s * s / static_cast<float>(h);
    if (accumulate)
      for (std::int64_t i = 0; i < h; ++i) dxr[i] += s * (dyr[i] * w[i] - xr[i] * coef);
    else
      for (std::int64_t i = 0; i < h; ++i) dxr[i] = s * (dyr[i] * w[i] - xr[i] * coef);
    for (std::int64_t i = 0; i < h; ++i) dw[i] += dyr[i] * xr[i] * s;
  }
}

}  // namespace epx::kernels
