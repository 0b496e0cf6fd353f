#include "kernels/reduce.hpp"

#include <cstring>

#include "core/check.hpp"
#include "kernels/float_convert.hpp"

namespace epx::kernels {

namespace {

// Chunks of hidden keep the accumulator in L1 while every row streams by once.
constexpr std::int64_t kChunk = 1024;

template <class T>
float load(const T* p, std::int64_t i) {
  if constexpr (sizeof(T) == 4) return p[i];
  else return bf16_to_float(p[i]);
}

template <class T>
void sum_rows_typed(const T* const* rows, int n, std::int64_t hidden, T* out) {
  alignas(64) float acc[kChunk];
  for (std::int64_t c0 = 0; c0 < hidden; c0 += kChunk) {
    const std::int64_t len = hidden - c0 < kChunk ? hidden - c0 : kChunk;
    if (n == 0) {
      std::memset(out + c0, 0, static_cast<std::size_t>(len) * sizeof(T));
      continue;
    }
    const T* r0 = rows[0] + c0;
    // 0 + x, not x: the sum starts from +0 like every reference (-0 becomes +0).
    for (std::int64_t i = 0; i < len; ++i) acc[i] = 0.0f + load(r0, i);
    for (int j = 1; j < n; ++j) {
      const T* r = rows[j] + c0;
      for (std::int64_t i = 0; i < len; ++i) acc[i] += load(r, i);
    }
    if constexpr (sizeof(T) == 4) {
      std::memcpy(out + c0, acc, static_cast<std::size_t>(len) * sizeof(float));
    } else {
      for (std::int64_t i = 0; i < len; ++i) out[c0 + i] = float_to_bf16(acc[i]);
    }
  }
}

}  // namespace

void sum_rows(const void* const* rows, int n, DType dtype, std::int64_t hidden, void* out) {
  if (dtype == DType::f32)
    sum_rows_typed(reinterpret_cast<const float* const*>(rows), n, hidden, static_cast<float*>(out));
  else if (dtype == DType::bf16)
    sum_rows_typed(reinterpret_cast<const std::uint16_t* const*>(rows), n, hidden,
                   static_cast<std::uint16_t*>(out));
  else
    EPX_THROW(InvalidArgument, "sum_rows: dtype = ", dtype_name(dtype), ", expected f32 or bf16");
}

}  // namespace epx::kernels
