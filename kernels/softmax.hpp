// The softmax loops that the router, training attention and serving
// attention share, in one fixed order (a max, then exp and sum in index
// order, then divides): every caller's bits come from the same arithmetic.
#pragma once

#include <cmath>
#include <cstdint>

namespace epx::kernels {

// out[j] = exp(in[j] - max(in)) for j < n (n >= 1; in == out allowed);
// returns their sum, added in index order.
inline float exp_minus_max(const float* in, float* out, std::int64_t n) {
  float m = in[0];
  for (std::int64_t j = 1; j < n; ++j) m = in[j] > m ? in[j] : m;
  float sum = 0.0f;
  for (std::int64_t j = 0; j < n; ++j) {
    out[j] = expf(in[j] - m);
    sum += out[j];
  }
  return sum;
}

// out[0..n) = softmax(in[0..n)) (n >= 1; in == out allowed).
inline void softmax(const float* in, float* out, std::int64_t n) {
  const float sum = exp_minus_max(in, out, n);
  for (std::int64_t j = 0; j < n; ++j) out[j] = out[j] / sum;
}

}  // namespace epx::kernels
