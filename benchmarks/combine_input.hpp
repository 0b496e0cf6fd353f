// The expert outputs y that the benchmark feeds to combine. They are derived
// from the received x, so that epx and the baseline combine the same y, and
// any rank can recompute another rank's y for the reference:
//   y[m] on rank r = bf16(value(x[m]) * factor(r, m)),
// value() being the bf16 value or the dequantized FP8 value (float(q) * scale).
// factor is in [1, 2): same sign as x, never zero, distinct per row.
#pragma once

#include <cstdint>
#include <epx/tensor.hpp>

namespace epx::bench {

float combine_factor(int rank, std::int64_t row);

// Writes row `row` of y (bf16 bits, hidden = x.dim(1) values) made from row
// `row` of x (bf16, f32 or e4m3 with f32 `scales` [.,H/128]).
void make_y_row(const Tensor& x, const Tensor& scales, std::int64_t row, float factor,
                std::uint16_t* out);

// y for all rows of a dispatch result received on `rank`: bf16 [M,H].
Tensor make_combine_input(const Tensor& x, const Tensor& scales, int rank);

// y for a low-latency dispatch result received on `rank`: bf16
// [E_local, slots, H] where x is [E_local, slots, H] (e4m3 with f32 `scales`
// [E_local, slots, H/128], or bf16/f32). Rows 0..count[e]-1 of expert e are
// made like make_combine_input's, with row index e * slots + row; the rest
// are zero.
Tensor make_low_latency_combine_input(const Tensor& x, const Tensor& scales, const Tensor& count,
                                      int rank);

}  // namespace epx::bench
