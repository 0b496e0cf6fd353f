// Row sums for combine: out = rows[0] + rows[1] + ... in that order, with f32
// accumulation and one rounding at the end, so the result does not depend on
// where the rows were read from.
#pragma once

#include <cstdint>

#include <epx/tensor.hpp>

namespace epx::kernels {

// rows: n pointers to `hidden` elements of `dtype` (f32 or bf16); out: the
// same dtype. n == 0 writes zeros.
void sum_rows(const void* const* rows, int n, DType dtype, std::int64_t hidden, void* out);

// As sum_rows, but each row has its own dtype (f32 or bf16) and out is in
// out_dtype (f32 or bf16): the hierarchical combine sums rows of y into f32
// partials, then partials (f32, or rounded to y's dtype) into the result.
void sum_rows_mixed(const void* const* rows, const DType* dtypes, int n, std::int64_t hidden,
                    DType out_dtype, void* out);

// out = sum over j in order of weights[j] * rows[j], each product and each sum
// in f32 (no fused multiply-add), from +0, rounded once; as sum_rows otherwise.
void weighted_sum_rows(const void* const* rows, const float* weights, int n, DType dtype,
                       std::int64_t hidden, void* out);

}  // namespace epx::kernels
