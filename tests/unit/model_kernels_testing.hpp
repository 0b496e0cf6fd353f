// Helpers for the model kernels' tests: random data, closeness against a
// reference, bitwise equality, and central finite differences in double.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace epx::kernels::ktest {

// Normal values (never exactly zero in practice), reproducible per seed.
inline std::vector<float> randn(std::size_t n, std::uint32_t seed, float stddev = 1.0f,
                                float mean = 0.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(mean, stddev);
  std::vector<float> v(n);
  for (auto& x : v) {
    do x = nd(rng);
    while (x == 0.0f);
  }
  return v;
}

inline std::vector<double> to_double(const std::vector<float>& v) {
  return std::vector<double>(v.begin(), v.end());
}

inline std::vector<float> to_float(const std::vector<double>& v) {
  std::vector<float> out(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) out[i] = static_cast<float>(v[i]);
  return out;
}

// |got - want| <= rtol (|want| + rms(want)) + atol for every element: relative,
// with the tensor's own scale as the floor for elements near zero (atol for a
// tensor that is zero in exact arithmetic).
template <class G, class W>
void expect_close(const std::vector<G>& got, const std::vector<W>& want, double rtol,
                  const std::string& what, double atol = 0.0) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double ss = 0.0;
  for (auto w : want) ss += double(w) * double(w);
  const double rms = want.empty() ? 0.0 : std::sqrt(ss / double(want.size()));
  int bad = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double g = got[i], w = want[i];
    const double tol = rtol * (std::fabs(w) + rms) + atol;
    if (!(std::fabs(g - w) <= tol)) {
      ADD_FAILURE() << what << "[" << i << "] = " << g << ", expected " << w << " (tol " << tol
                    << ")";
      if (++bad >= 5) return;
    }
  }
}

// Bit for bit, for the ops whose formula fixes every rounding.
inline void expect_bits(const std::vector<float>& got, const std::vector<float>& want,
                        const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  int bad = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (std::memcmp(&got[i], &want[i], sizeof(float)) != 0) {
      ADD_FAILURE() << what << "[" << i << "] = " << got[i] << ", expected bits of " << want[i];
      if (++bad >= 5) return;
    }
  }
}

// Central differences of f (evaluated in double) at x, for every element of x.
template <class F>
std::vector<double> fd_grad(F&& f, std::vector<double> x, double eps = 1e-5) {
  std::vector<double> g(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double x0 = x[i];
    x[i] = x0 + eps;
    const double fp = f(x);
    x[i] = x0 - eps;
    const double fm = f(x);
    x[i] = x0;
    g[i] = (fp - fm) / (2.0 * eps);
  }
  return g;
}

// The random-weighted sum loss L = sum_i r_i y_i, in double.
inline double weighted_sum(const std::vector<double>& y, const std::vector<float>& r) {
  double s = 0.0;
  for (std::size_t i = 0; i < y.size(); ++i) s += double(r[i]) * y[i];
  return s;
}

// Gradients from f32 kernels against double finite differences.
constexpr double kGradRtol = 1e-4;
// f32 GEMM-based ops against double loops.
constexpr double kGemmRtol = 1e-5;

}  // namespace epx::kernels::ktest
