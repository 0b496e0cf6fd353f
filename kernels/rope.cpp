// Rotary position embedding (HF Llama's rotate-half layout), in place.
#include <cmath>

#include <epx/model_kernels.hpp>

#include "core/check.hpp"

namespace epx::kernels {

namespace {

// Pairs handled per pass: the angles of one row live on the stack (no
// allocation), and a head_dim above 2 * kPairs takes several passes.
constexpr std::int64_t kPairs = 256;

// sign = +1: rotate by a (forward); -1: by -a (the transpose, for the backward).
void rope_apply(float* x, const std::int32_t* positions, std::int64_t rows, std::int64_t heads,
                std::int64_t head_dim, float theta, float sign, const char* op) {
  EPX_CHECK(head_dim % 2 == 0 && head_dim >= 0, InvalidArgument, op, ": head_dim = ", head_dim,
            ", expected even");
  const std::int64_t half = head_dim / 2;
  const std::int64_t width = heads * head_dim;
  float inv_freq[kPairs], cs[kPairs], sn[kPairs];
  for (std::int64_t j0 = 0; j0 < half; j0 += kPairs) {
    const std::int64_t len = half - j0 < kPairs ? half - j0 : kPairs;
    for (std::int64_t j = 0; j < len; ++j)
      inv_freq[j] = 1.0f / powf(theta, static_cast<float>(2 * (j0 + j)) / static_cast<float>(head_dim));
    for (std::int64_t r = 0; r < rows; ++r) {
      const float pos = static_cast<float>(positions[r]);
      for (std::int64_t j = 0; j < len; ++j) {
        const float a = pos * inv_freq[j];
        cs[j] = cosf(a);
        sn[j] = sign * sinf(a);  // sin(-a) = -sin(a) exactly
      }
      float* xr = x + r * width;
      for (std::int64_t hd = 0; hd < heads; ++hd) {
        float* x1 = xr + hd * head_dim + j0;
        float* x2 = x1 + half;
        for (std::int64_t j = 0; j < len; ++j) {
          const float a1 = x1[j], a2 = x2[j];
          x1[j] = a1 * cs[j] - a2 * sn[j];
          x2[j] = a2 * cs[j] + a1 * sn[j];
        }
      }
    }
  }
}

}  // namespace

void rope_forward(float* x, const std::int32_t* positions, std::int64_t rows, std::int64_t heads,
                  std::int64_t head_dim, float theta) {
  rope_apply(x, positions, rows, heads, head_dim, theta, 1.0f, "rope_forward");
}

void rope_backward(float* dx, const std::int32_t* positions, std::int64_t rows,
                   std::int64_t heads, std::int64_t head_dim, float theta) {
  rope_apply(dx, positions, rows, heads, head_dim, theta, -1.0f, "rope_backward");
}

}  // namespace epx::kernels
