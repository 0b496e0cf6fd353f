// Linear layers (y = x w^T and its two gradients) and the thread count that
// BLAS and the model's kernels share.
#include <atomic>
#include <climits>

#include <cblas.h>

#include <epx/model_kernels.hpp>

#include "core/check.hpp"
#include "core/log.hpp"
#include "kernels/gemm.hpp"

namespace epx::kernels {

namespace {

// The only global of the kernels. 1 by default, as the config's `threads:`,
// rather than OpenBLAS's own default of every core.
std::atomic<int> g_threads{1};

void apply_threads_once() {
  // The first GEMM pushes the default to OpenBLAS; set_num_threads() later overrides it.
  static const bool applied = (openblas_set_num_threads(g_threads.load()), true);
  (void)applied;
}

}  // namespace

void set_num_threads(int threads) {
  EPX_CHECK_GE(threads, 1, InvalidArgument, "kernels::set_num_threads");
  apply_threads_once();
  g_threads.store(threads);
  openblas_set_num_threads(threads);
  EPX_LOG(Debug, Kernels, "kernels: ", threads, " BLAS thread(s) per rank");
}

int num_threads() noexcept { return g_threads.load(); }

void sgemm(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, float alpha,
           const float* a, std::int64_t lda, const float* b, std::int64_t ldb, float beta, float* c,
           std::int64_t ldc) {
  if (m == 0 || n == 0) return;
  if (k == 0) {
    // cblas would want lda >= 1; the product is empty, C = beta C.
    for (std::int64_t i = 0; i < m; ++i) {
      float* row = c + i * ldc;
      if (beta == 0.0f)
        for (std::int64_t j = 0; j < n; ++j) row[j] = 0.0f;
      else
        for (std::int64_t j = 0; j < n; ++j) row[j] *= beta;
    }
    return;
  }
  EPX_CHECK(m <= INT_MAX && n <= INT_MAX && k <= INT_MAX && lda <= INT_MAX && ldb <= INT_MAX &&
                ldc <= INT_MAX,
            InvalidArgument, "sgemm: m=", m, " n=", n, " k=", k, " exceed cblas's 32-bit int");
  apply_threads_once();
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
              static_cast<blasint>(m), static_cast<blasint>(n), static_cast<blasint>(k), alpha, a,
              static_cast<blasint>(lda), b, static_cast<blasint>(ldb), beta, c,
              static_cast<blasint>(ldc));
}

void linear_forward(float* y, const float* x, const float* w, std::int64_t n, std::int64_t in,
                    std::int64_t out, bool accumulate) {
  sgemm(false, true, n, out, in, 1.0f, x, in, w, in, accumulate ? 1.0f : 0.0f, y, out);
}

void linear_forward_row(float* y, const float* x, const float* w, std::int64_t in, std::int64_t out,
                        bool accumulate) {
  if (out == 0) return;
  if (in == 0) {
    if (!accumulate)
      for (std::int64_t j = 0; j < out; ++j) y[j] = 0.0f;
    return;
  }
  EPX_CHECK(in <= INT_MAX && out <= INT_MAX, InvalidArgument, "linear_forward_row: in=", in,
            " out=", out, " exceed cblas's 32-bit int");
  apply_threads_once();
  cblas_sgemv(CblasRowMajor, CblasNoTrans, static_cast<blasint>(out), static_cast<blasint>(in),
              1.0f, w, static_cast<blasint>(in), x, 1, accumulate ? 1.0f : 0.0f, y, 1);
}

void linear_backward_input(float* dx, const float* dy, const float* w, std::int64_t n,
                           std::int64_t in, std::int64_t out, bool accumulate) {
  sgemm(false, false, n, in, out, 1.0f, dy, out, w, in, accumulate ? 1.0f : 0.0f, dx, in);
}

void linear_backward_weight(float* dw, const float* dy, const float* x, std::int64_t n,
                            std::int64_t in, std::int64_t out) {
  sgemm(true, false, out, in, n, 1.0f, dy, out, x, in, 1.0f, dw, in);
}

}  // namespace epx::kernels
