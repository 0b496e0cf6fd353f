#include "benchmarks/combine_input.hpp"

#include <algorithm>
#include <epx/error.hpp>

#include "kernels/float_convert.hpp"
#include "kernels/fp8_quant.hpp"

namespace epx::bench {

float combine_factor(int rank, std::int64_t row) {
  return 1.0f + static_cast<float>((row * 7 + rank * 3) % 16) / 16.0f;
}

void make_y_row(const Tensor& x, const Tensor& scales, std::int64_t row, float factor,
                std::uint16_t* out) {
  const std::int64_t hidden = x.dim(1);
  switch (x.dtype()) {
    case DType::bf16: {
      const std::uint16_t* src = x.data<std::uint16_t>() + row * hidden;
      for (std::int64_t h = 0; h < hidden; ++h)
        out[h] = kernels::float_to_bf16(kernels::bf16_to_float(src[h]) * factor);
      return;
    }
    case DType::f32: {
      const float* src = x.data<float>() + row * hidden;
      for (std::int64_t h = 0; h < hidden; ++h) out[h] = kernels::float_to_bf16(src[h] * factor);
      return;
    }
    case DType::e4m3: {
      const std::uint8_t* src = x.data<std::uint8_t>() + row * hidden;
      const float* s = scales.data<float>() + row * scales.dim(1);
      for (std::int64_t h = 0; h < hidden; ++h) {
        const float value = kernels::e4m3_to_float(src[h]) * s[h / kernels::kFp8BlockSize];
        out[h] = kernels::float_to_bf16(value * factor);
      }
      return;
    }
    default:
      throw Error(ErrorCode::InvalidArgument, std::string("combine input: x dtype ") +
                                                  dtype_name(x.dtype()) +
                                                  ", expected bf16, f32 or e4m3");
  }
}

Tensor make_combine_input(const Tensor& x, const Tensor& scales, int rank) {
  Tensor y = Tensor::empty({x.dim(0), x.dim(1)}, DType::bf16);
  std::uint16_t* out = y.data<std::uint16_t>();
  for (std::int64_t m = 0; m < x.dim(0); ++m)
    make_y_row(x, scales, m, combine_factor(rank, m), out + m * x.dim(1));
  return y;
}

Tensor make_low_latency_combine_input(const Tensor& x, const Tensor& scales, const Tensor& count,
                                      int rank) {
  const std::int64_t experts = x.dim(0), slots = x.dim(1), hidden = x.dim(2);
  const bool fp8 = x.dtype() == DType::e4m3;
  Tensor y = Tensor::zeros({experts, slots, hidden}, DType::bf16);
  const std::size_t x_bytes = static_cast<std::size_t>(slots * hidden) * dtype_size(x.dtype());
  const std::int64_t num_scales = fp8 ? scales.dim(2) : 0;
  for (std::int64_t e = 0; e < experts; ++e) {
    // One expert's rows as the [slots, H] matrix that make_y_row reads.
    auto* xe = const_cast<unsigned char*>(static_cast<const unsigned char*>(x.raw())) + e * x_bytes;
    const Tensor rows = Tensor::wrap(xe, {slots, hidden}, x.dtype());
    const Tensor row_scales =
        fp8 ? Tensor::wrap(const_cast<float*>(scales.data<float>()) + e * slots * num_scales,
                           {slots, num_scales}, DType::f32)
            : Tensor();
    std::uint16_t* out = y.data<std::uint16_t>() + e * slots * hidden;
    const std::int64_t n = std::clamp<std::int64_t>(count.data<std::int32_t>()[e], 0, slots);
    for (std::int64_t m = 0; m < n; ++m)
      make_y_row(rows, row_scales, m, combine_factor(rank, e * slots + m), out + m * hidden);
  }
  return y;
}

}  // namespace epx::bench
