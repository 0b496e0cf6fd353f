#include "benchmarks/combine_input.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <epx/error.hpp>
#include <vector>

#include "kernels/float_convert.hpp"
#include "kernels/fp8_quant.hpp"

namespace epx::bench {

namespace {

// The value of element h of row `row` of x, as dispatch delivered it.
float x_value(const Tensor& x, const Tensor& scales, std::int64_t row, std::int64_t h) {
  const std::int64_t hidden = x.dim(1);
  switch (x.dtype()) {
    case DType::bf16:
      return kernels::bf16_to_float(x.data<std::uint16_t>()[row * hidden + h]);
    case DType::f32:
      return x.data<float>()[row * hidden + h];
    case DType::e4m3:
      return kernels::e4m3_to_float(x.data<std::uint8_t>()[row * hidden + h]) *
             scales.data<float>()[row * scales.dim(1) + h / kernels::kFp8BlockSize];
    default:
      throw Error(ErrorCode::InvalidArgument, std::string("combine input: x dtype ") +
                                                  dtype_name(x.dtype()) +
                                                  ", expected bf16, f32 or e4m3");
  }
}

}  // namespace

float combine_factor(int rank, std::int64_t row, const YSpec& spec) {
  const float base = 1.0f + static_cast<float>((row * 7 + rank * 3) % 16) / 16.0f;
  if (!spec.wide) return base;
  // 24 binades and a sign from (rank, row): a token's rows on different
  // ranks differ in magnitude by up to 2^24 and cancel in part.
  const int binade = static_cast<int>((row * 5 + rank * 11) % 24);
  const float sign = (row + rank) % 2 == 0 ? 1.0f : -1.0f;
  return sign * std::ldexp(base, -binade);
}

void make_y_row(const Tensor& x, const Tensor& scales, std::int64_t row, float factor,
                const YSpec& spec, void* out) {
  const std::int64_t hidden = x.dim(1);
  for (std::int64_t h = 0; h < hidden; ++h) {
    const float v = x_value(x, scales, row, h) * factor;
    if (spec.wide)
      static_cast<float*>(out)[h] = v;
    else
      static_cast<std::uint16_t*>(out)[h] = kernels::float_to_bf16(v);
  }
}

Tensor make_combine_input(const Tensor& x, const Tensor& scales, int rank, const YSpec& spec) {
  Tensor y = Tensor::empty({x.dim(0), x.dim(1)}, spec.dtype());
  const std::size_t row_bytes = static_cast<std::size_t>(x.dim(1)) * dtype_size(spec.dtype());
  auto* out = static_cast<unsigned char*>(y.raw());
  for (std::int64_t m = 0; m < x.dim(0); ++m)
    make_y_row(x, scales, m, combine_factor(rank, m, spec), spec, out + m * row_bytes);
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
      make_y_row(rows, row_scales, m, combine_factor(rank, e * slots + m), {}, out + m * hidden);
  }
  return y;
}

namespace {

// make_y_row's values as the f32 values the references sum.
void y_row_f32(const test::Payload& own, std::int64_t token, float factor, const YSpec& spec,
               float* out) {
  const std::int64_t hidden = own.x.dim(1);
  if (spec.wide) return make_y_row(own.x, own.scales, token, factor, spec, out);
  std::vector<std::uint16_t> bits(static_cast<std::size_t>(hidden));
  make_y_row(own.x, own.scales, token, factor, spec, bits.data());
  for (std::int64_t h = 0; h < hidden; ++h)
    out[h] = kernels::bf16_to_float(bits[static_cast<std::size_t>(h)]);
}

}  // namespace

test::ExpertRows combine_rows(const test::Payload& own, const YSpec& spec) {
  return [own, spec](int rank, std::int64_t row, std::int64_t token, float* out) {
    y_row_f32(own, token, combine_factor(rank, row, spec), spec, out);
  };
}

test::ExpertSlotRows low_latency_combine_rows(const test::Payload& own, int experts_per_rank,
                                              std::int64_t slots) {
  return [own, experts_per_rank, slots](std::int64_t expert, std::int64_t row, std::int64_t token,
                                        float* out) {
    const int rank = static_cast<int>(expert / experts_per_rank);
    const std::int64_t local = expert % experts_per_rank;
    y_row_f32(own, token, combine_factor(rank, local * slots + row), {}, out);
  };
}

}  // namespace epx::bench
