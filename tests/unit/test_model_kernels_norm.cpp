// RMSNorm, RoPE and the embedding against plain loops (bit for bit where the
// header fixes the formula) and their backwards against finite differences.
#include <cmath>

#include <epx/model_kernels.hpp>

#include "tests/unit/model_kernels_testing.hpp"

namespace epx::kernels {
namespace {

using namespace epx::kernels::ktest;

// ---------------------------------------------------------------- RMSNorm

template <class T>
std::vector<T> ref_rmsnorm(const std::vector<T>& x, const std::vector<T>& w, std::int64_t n,
                           std::int64_t h, T eps, std::vector<T>* rstd = nullptr) {
  std::vector<T> y(n * h);
  for (std::int64_t r = 0; r < n; ++r) {
    T ss = 0;
    for (std::int64_t i = 0; i < h; ++i) ss += x[r * h + i] * x[r * h + i];
    const T s = T(1) / std::sqrt(ss / T(h) + eps);
    if (rstd) rstd->push_back(s);
    for (std::int64_t i = 0; i < h; ++i) y[r * h + i] = x[r * h + i] * s * w[i];
  }
  return y;
}

TEST(ModelKernelsRmsnorm, ForwardIsTheFormulaBitForBit) {
  for (auto [n, h] : {std::pair<std::int64_t, std::int64_t>{0, 5}, {1, 1}, {3, 7}, {17, 129},
                      {5, 1000}}) {
    const auto x = randn(n * h, 1, 2.0f), w = randn(h, 2, 1.0f, 1.0f);
    std::vector<float> y(n * h, 7.0f), rstd(n, 7.0f), want_rstd;
    rmsnorm_forward(y.data(), rstd.data(), x.data(), w.data(), n, h, 1e-6f);
    expect_bits(y, ref_rmsnorm(x, w, n, h, 1e-6f, &want_rstd), "y");
    expect_bits(rstd, want_rstd, "rstd");
  }
}

TEST(ModelKernelsRmsnorm, BackwardMatchesFiniteDifferences) {
  const std::int64_t n = 4, h = 9;
  const double eps = 1e-2;  // large enough to matter in the gradient
  const auto x = randn(n * h, 11), w = randn(h, 12, 0.5f, 1.0f), r = randn(n * h, 13);
  std::vector<float> y(n * h), rstd(n);
  rmsnorm_forward(y.data(), rstd.data(), x.data(), w.data(), n, h, float(eps));
  std::vector<float> dx(n * h, 7.0f), dw(h, 0.0f);
  rmsnorm_backward(dx.data(), dw.data(), r.data(), x.data(), w.data(), rstd.data(), n, h, false);
  const auto xd = to_double(x), wd = to_double(w);
  expect_close(dx, fd_grad([&](const auto& v) {
    return weighted_sum(ref_rmsnorm(v, wd, n, h, eps), r);
  }, xd), kGradRtol, "dx");
  expect_close(dw, fd_grad([&](const auto& v) {
    return weighted_sum(ref_rmsnorm(xd, v, n, h, eps), r);
  }, wd), kGradRtol, "dw");

  // accumulate: dx += and dw += the same values.
  const auto dx0 = randn(n * h, 14), dw0 = randn(h, 15);
  auto dx2 = dx0, dw2 = dw0;
  rmsnorm_backward(dx2.data(), dw2.data(), r.data(), x.data(), w.data(), rstd.data(), n, h, true);
  std::vector<double> want_dx(n * h), want_dw(h);
  for (std::int64_t i = 0; i < n * h; ++i) want_dx[i] = double(dx0[i]) + dx[i];
  for (std::int64_t i = 0; i < h; ++i) want_dw[i] = double(dw0[i]) + dw[i];
  expect_close(dx2, want_dx, 1e-6, "dx accumulated");
  expect_close(dw2, want_dw, 1e-6, "dw accumulated");
}

TEST(ModelKernelsRmsnorm, ZeroRows) {
  std::vector<float> dw(3, 2.0f);
  rmsnorm_forward(nullptr, nullptr, nullptr, nullptr, 0, 3, 1e-6f);
  rmsnorm_backward(nullptr, dw.data(), nullptr, nullptr, nullptr, nullptr, 0, 3, false);
  EXPECT_EQ(dw, std::vector<float>(3, 2.0f));
}

// ---------------------------------------------------------------- RoPE

// The header's formula, f32 and the named libm functions.
std::vector<float> ref_rope_f32(std::vector<float> x, const std::vector<std::int32_t>& pos,
                                std::int64_t heads, std::int64_t d, float theta) {
  const std::int64_t half = d / 2;
  for (std::size_t r = 0; r < pos.size(); ++r)
    for (std::int64_t hd = 0; hd < heads; ++hd)
      for (std::int64_t j = 0; j < half; ++j) {
        const float inv = 1.0f / powf(theta, float(2 * j) / float(d));
        const float a = float(pos[r]) * inv;
        float* p = &x[r * heads * d + hd * d];
        const float x1 = p[j], x2 = p[j + half];
        p[j] = x1 * cosf(a) - x2 * sinf(a);
        p[j + half] = x2 * cosf(a) + x1 * sinf(a);
      }
  return x;
}

// The same map in double from the same f32 angles, for the finite differences.
std::vector<double> ref_rope_f64(std::vector<double> x, const std::vector<std::int32_t>& pos,
                                 std::int64_t heads, std::int64_t d, float theta) {
  const std::int64_t half = d / 2;
  for (std::size_t r = 0; r < pos.size(); ++r)
    for (std::int64_t hd = 0; hd < heads; ++hd)
      for (std::int64_t j = 0; j < half; ++j) {
        const double a = float(pos[r]) * (1.0f / powf(theta, float(2 * j) / float(d)));
        double* p = &x[r * heads * d + hd * d];
        const double x1 = p[j], x2 = p[j + half];
        p[j] = x1 * std::cos(a) - x2 * std::sin(a);
        p[j + half] = x2 * std::cos(a) + x1 * std::sin(a);
      }
  return x;
}

std::vector<std::int32_t> positions(std::size_t rows, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<std::int32_t> u(0, 4095);
  std::vector<std::int32_t> p(rows);
  for (auto& v : p) v = u(rng);
  if (rows > 1) p[0] = 0, p[1] = 1;
  return p;
}

TEST(ModelKernelsRope, ForwardIsTheFormulaBitForBit) {
  // 520: more pairs than one pass of the kernel's angle buffer holds.
  for (auto [rows, heads, d] : {std::tuple<std::int64_t, std::int64_t, std::int64_t>{0, 2, 4},
                                {1, 1, 2}, {7, 3, 10}, {5, 2, 64}, {3, 2, 520}}) {
    SCOPED_TRACE(::testing::Message() << "rows " << rows << " heads " << heads << " d " << d);
    for (float theta : {10000.0f, 500000.0f}) {
      const auto pos = positions(rows, 3);
      const auto x = randn(rows * heads * d, 4);
      auto got = x;
      rope_forward(got.data(), pos.data(), rows, heads, d, theta);
      expect_bits(got, ref_rope_f32(x, pos, heads, d, theta), "x");
    }
  }
}

TEST(ModelKernelsRope, BackwardIsTheTransposeByFiniteDifferences) {
  const std::int64_t rows = 5, heads = 3, d = 6;
  const float theta = 10000.0f;
  const auto pos = positions(rows, 5);
  const auto x = randn(rows * heads * d, 6), r = randn(rows * heads * d, 7);
  auto dx = r;
  rope_backward(dx.data(), pos.data(), rows, heads, d, theta);
  expect_close(dx, fd_grad([&](const auto& v) {
    return weighted_sum(ref_rope_f64(v, pos, heads, d, theta), r);
  }, to_double(x)), kGradRtol, "dx");
  // And backward undoes forward (a rotation), to f32 rounding.
  auto y = x;
  rope_forward(y.data(), pos.data(), rows, heads, d, theta);
  rope_backward(y.data(), pos.data(), rows, heads, d, theta);
  expect_close(y, to_double(x), 1e-6, "backward(forward(x))");
}

TEST(ModelKernelsRope, RejectsOddHeadDim) {
  std::vector<float> x(3);
  const std::int32_t pos = 0;
  EXPECT_ANY_THROW(rope_forward(x.data(), &pos, 1, 1, 3, 10000.0f));
}

// ---------------------------------------------------------------- embedding

TEST(ModelKernelsEmbedding, ForwardGathersAndBackwardAddsInOrder) {
  const std::int64_t vocab = 11, h = 13;
  const std::vector<std::int32_t> tokens = {3, 0, 10, 3, 7, 3, 0};
  const std::int64_t n = tokens.size();
  const auto table = randn(vocab * h, 1), dout = randn(n * h, 2), dtable0 = randn(vocab * h, 3);
  std::vector<float> out(n * h, 7.0f), want(n * h);
  embedding_forward(out.data(), table.data(), tokens.data(), n, h);
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t c = 0; c < h; ++c) want[i * h + c] = table[tokens[i] * h + c];
  expect_bits(out, want, "out");

  auto dtable = dtable0, want_dt = dtable0;
  embedding_backward(dtable.data(), dout.data(), tokens.data(), n, h);
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t c = 0; c < h; ++c) want_dt[tokens[i] * h + c] += dout[i * h + c];
  expect_bits(dtable, want_dt, "dtable");

  // The gradient of sum r * out wrt the table, by finite differences.
  std::vector<float> g(vocab * h, 0.0f);
  embedding_backward(g.data(), dout.data(), tokens.data(), n, h);
  expect_close(g, fd_grad([&](const std::vector<double>& t) {
    std::vector<double> o(n * h);
    for (std::int64_t i = 0; i < n; ++i)
      for (std::int64_t c = 0; c < h; ++c) o[i * h + c] = t[tokens[i] * h + c];
    return weighted_sum(o, dout);
  }, to_double(table)), kGradRtol, "dtable by finite differences");

  // n = 0 touches nothing.
  embedding_forward(nullptr, table.data(), nullptr, 0, h);
  auto same = dtable0;
  embedding_backward(same.data(), nullptr, nullptr, 0, h);
  expect_bits(same, dtable0, "dtable after n = 0");
}

}  // namespace
}  // namespace epx::kernels
