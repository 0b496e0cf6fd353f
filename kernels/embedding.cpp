// Token embedding: a row gather and its scatter-add.
#include <cstring>

#include <epx/model_kernels.hpp>

namespace epx::kernels {

void embedding_forward(float* out, const float* table, const std::int32_t* tokens,
                       std::int64_t n, std::int64_t h) {
  const std::size_t bytes = static_cast<std::size_t>(h) * sizeof(float);
  for (std::int64_t i = 0; i < n; ++i) std::memcpy(out + i * h, table + tokens[i] * h, bytes);
}

void embedding_backward(float* dtable, const float* dout, const std::int32_t* tokens,
                        std::int64_t n, std::int64_t h) {
  for (std::int64_t i = 0; i < n; ++i) {
    float* row = dtable + static_cast<std::int64_t>(tokens[i]) * h;
    const float* d = dout + i * h;
    for (std::int64_t c = 0; c < h; ++c) row[c] += d[c];
  }
}

}  // namespace epx::kernels
