// The expert outputs y that the benchmark feeds to combine. They are derived
// from the received x, so that epx and the baseline combine the same y, and
// any rank can recompute another rank's y for the reference:
//   y[m] on rank r = ydtype(value(x[m]) * factor(r, m)),
// value() being the bf16 value or the dequantized FP8 value (float(q) * scale).
// By default factor is in [1, 2) and y bf16: a token's rows then have one
// sign and magnitudes within 4x, so every f32 sum of them is exact and any
// summation order gives the same bits. `wide` y (f32, factors over 2^-23 ..
// 2 with both signs) makes the sums round, so that their order shows.
#pragma once

#include <cstdint>
#include <epx/tensor.hpp>

#include "tests/support/combine_reference.hpp"
#include "tests/support/low_latency_reference.hpp"

namespace epx::bench {

struct YSpec {
  bool wide = false;  // f32 y with wide factors of both signs
  DType dtype() const { return wide ? DType::f32 : DType::bf16; }
};

float combine_factor(int rank, std::int64_t row, const YSpec& spec = {});

// Writes row `row` of y (spec.dtype(), hidden = x.dim(1) values) made from
// row `row` of x (bf16, f32 or e4m3 with f32 `scales` [.,H/128]).
void make_y_row(const Tensor& x, const Tensor& scales, std::int64_t row, float factor,
                const YSpec& spec, void* out);

// y for all rows of a dispatch result received on `rank`: [M,H].
Tensor make_combine_input(const Tensor& x, const Tensor& scales, int rank, const YSpec& spec = {});

// The same y for the references (tests/support), from the rows this rank
// sent (`own`, its payload_of), as f32 values: combine_rows for normal mode,
// low_latency_combine_rows for low-latency mode (bf16) with `slots` rows per
// expert.
test::ExpertRows combine_rows(const test::Payload& own, const YSpec& spec = {});
test::ExpertSlotRows low_latency_combine_rows(const test::Payload& own, int experts_per_rank,
                                              std::int64_t slots);

// y for a low-latency dispatch result received on `rank`: bf16
// [E_local, slots, H] where x is [E_local, slots, H] (e4m3 with f32 `scales`
// [E_local, slots, H/128], or bf16/f32). Rows 0..count[e]-1 of expert e are
// made like make_combine_input's, with row index e * slots + row; the rest
// are zero.
Tensor make_low_latency_combine_input(const Tensor& x, const Tensor& scales, const Tensor& count,
                                      int rank);

}  // namespace epx::bench
