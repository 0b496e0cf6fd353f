// The one place the model's kernels call BLAS: row-major cblas_sgemm with the
// empty shapes cblas rejects (a zero leading dimension) handled here.
//
// Reproducibility: the same call (shapes, thread count) gives the same bits
// run to run. Other shapes may not: with OpenBLAS 0.3.21 (Zen kernels) row i of
// C differs in the last bits when the same row is multiplied within a call of
// another m or at another row offset, and 2 threads round differently from 1
// (measured; tests/unit/test_model_kernels_linear.cpp checks the repeatable part).
#pragma once

#include <cstdint>

namespace epx::kernels {

// C [m,n] = alpha op(A) op(B) + beta C, row-major, op(X) = X^T when trans_x.
// k == 0 leaves C = beta C (C = 0 for beta == 0, whatever C held).
void sgemm(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, float alpha,
           const float* a, std::int64_t lda, const float* b, std::int64_t ldb, float beta, float* c,
           std::int64_t ldc);

}  // namespace epx::kernels
