// Linear, SwiGLU, the SwiGLU MLP and the grouped MLP against plain loops in
// double, and their backwards against finite differences.
#include <epx/model_kernels.hpp>

#include "kernels/gemm.hpp"
#include "tests/unit/model_kernels_testing.hpp"

namespace epx::kernels {
namespace {

using namespace epx::kernels::ktest;

// y [n,out] = x [n,in] w^T, in T.
template <class T>
std::vector<T> ref_linear(const std::vector<T>& x, const std::vector<T>& w, std::int64_t n,
                          std::int64_t in, std::int64_t out) {
  std::vector<T> y(n * out);
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t o = 0; o < out; ++o) {
      T acc = 0;
      for (std::int64_t k = 0; k < in; ++k) acc += x[i * in + k] * w[o * in + k];
      y[i * out + o] = acc;
    }
  return y;
}

struct Shape {
  std::int64_t n, in, out;
};

TEST(ModelKernelsLinear, ForwardAndBackwardMatchLoops) {
  for (Shape s : {Shape{1, 1, 1}, Shape{5, 7, 3}, Shape{13, 33, 17}, Shape{37, 65, 129}}) {
    SCOPED_TRACE(::testing::Message() << "n " << s.n << " in " << s.in << " out " << s.out);
    const auto x = randn(s.n * s.in, 1), w = randn(s.out * s.in, 2), dy = randn(s.n * s.out, 3);
    const auto y0 = randn(s.n * s.out, 4), dx0 = randn(s.n * s.in, 5), dw0 = randn(s.out * s.in, 6);
    const auto want_y = ref_linear(to_double(x), to_double(w), s.n, s.in, s.out);

    std::vector<float> y(s.n * s.out, 7.0f);
    linear_forward(y.data(), x.data(), w.data(), s.n, s.in, s.out);
    expect_close(y, want_y, kGemmRtol, "y");
    y = y0;
    linear_forward(y.data(), x.data(), w.data(), s.n, s.in, s.out, true);
    std::vector<double> want_acc(want_y);
    for (std::size_t i = 0; i < want_acc.size(); ++i) want_acc[i] += y0[i];
    expect_close(y, want_acc, kGemmRtol, "y accumulated");

    // dx = dy w, dw = dy^T x, as loops.
    std::vector<double> want_dx(s.n * s.in, 0.0), want_dw(s.out * s.in, 0.0);
    for (std::int64_t i = 0; i < s.n; ++i)
      for (std::int64_t k = 0; k < s.in; ++k)
        for (std::int64_t o = 0; o < s.out; ++o) {
          want_dx[i * s.in + k] += double(dy[i * s.out + o]) * w[o * s.in + k];
          want_dw[o * s.in + k] += double(dy[i * s.out + o]) * x[i * s.in + k];
        }
    std::vector<float> dx(s.n * s.in, 7.0f);
    linear_backward_input(dx.data(), dy.data(), w.data(), s.n, s.in, s.out, false);
    expect_close(dx, want_dx, kGemmRtol, "dx");
    dx = dx0;
    linear_backward_input(dx.data(), dy.data(), w.data(), s.n, s.in, s.out, true);
    for (std::size_t i = 0; i < want_dx.size(); ++i) want_dx[i] += dx0[i];
    expect_close(dx, want_dx, kGemmRtol, "dx accumulated");
    auto dw = dw0;
    linear_backward_weight(dw.data(), dy.data(), x.data(), s.n, s.in, s.out);
    for (std::size_t i = 0; i < want_dw.size(); ++i) want_dw[i] += dw0[i];
    expect_close(dw, want_dw, kGemmRtol, "dw accumulated");
  }
}

TEST(ModelKernelsLinear, OneRowInEveryTransposition) {
  // C [1,n] = alpha op(A) op(B) + beta C (a decode step's one token) for
  // both transpositions of A and B, leading dimensions past the widths.
  const std::int64_t n = 37, k = 65, pad = 3;
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      SCOPED_TRACE(::testing::Message() << "trans_a " << ta << " trans_b " << tb);
      const std::int64_t lda = ta ? 1 + pad : k + pad, ldb = tb ? k + pad : n + pad;
      const auto a = randn(ta ? k * lda : lda, 11), b = randn((tb ? n : k) * ldb, 12);
      const auto c0 = randn(n, 13);
      std::vector<double> want(n);
      for (std::int64_t j = 0; j < n; ++j) {
        double acc = 0;
        for (std::int64_t i = 0; i < k; ++i)
          acc += double(ta ? a[i * lda] : a[i]) * double(tb ? b[j * ldb + i] : b[i * ldb + j]);
        want[j] = 0.5 * acc + 2.0 * double(c0[j]);
      }
      std::vector<float> c = c0;
      sgemm(ta, tb, 1, n, k, 0.5f, a.data(), lda, b.data(), ldb, 2.0f, c.data(), n);
      expect_close(c, want, kGemmRtol, "c");
    }
}

TEST(ModelKernelsLinear, OneRowByGemvMatchesTheLoopAndRepeats) {
  // linear_forward_row and mlp_forward_row against double loops, shapes not
  // powers of two, with and without accumulate; the same bits run to run.
  for (Shape s : {Shape{1, 1, 1}, Shape{1, 7, 3}, Shape{1, 65, 129}, Shape{1, 300, 77}}) {
    SCOPED_TRACE(::testing::Message() << "in " << s.in << " out " << s.out);
    const auto x = randn(s.in, 21), w = randn(s.out * s.in, 22), y0 = randn(s.out, 23);
    std::vector<double> want = ref_linear(to_double(x), to_double(w), 1, s.in, s.out);
    std::vector<float> y(s.out, 7.0f);
    linear_forward_row(y.data(), x.data(), w.data(), s.in, s.out);
    expect_close(y, want, kGemmRtol, "y");
    std::vector<float> again(s.out, -1.0f);
    linear_forward_row(again.data(), x.data(), w.data(), s.in, s.out);
    EXPECT_EQ(y, again);
    y = y0;
    linear_forward_row(y.data(), x.data(), w.data(), s.in, s.out, /*accumulate=*/true);
    for (std::int64_t j = 0; j < s.out; ++j) want[j] += y0[j];
    expect_close(y, want, kGemmRtol, "y accumulated");
  }
  const std::int64_t H = 33, I = 47;
  const auto x = randn(H, 31), g = randn(I * H, 32, 0.2f), u = randn(I * H, 33, 0.2f),
             d = randn(H * I, 34, 0.2f);
  std::vector<float> gw = g, uw = u, dw = d;
  const MlpWeights w{gw.data(), uw.data(), dw.data(), H, I};
  std::vector<float> y_rows(H), y_gemm(H), saved_rows(3 * I), saved_gemm(3 * I);
  mlp_forward_row(y_rows.data(), saved_rows.data(), x.data(), w);
  mlp_forward(y_gemm.data(), saved_gemm.data(), x.data(), 1, w);
  expect_close(y_rows, to_double(y_gemm), 1e-5, "mlp_forward_row against mlp_forward");
  std::vector<float> empty_out(3, 5.0f);
  linear_forward_row(empty_out.data(), x.data(), w.gate, 0, 3);  // in == 0: y = 0
  EXPECT_EQ(empty_out, std::vector<float>(3, 0.0f));
}

TEST(ModelKernelsLinear, EmptyShapes) {
  const auto w = randn(12, 1), x = randn(12, 2);
  // n = 0 and out = 0 touch nothing.
  std::vector<float> y(4, 3.0f), dw(12, 5.0f);
  linear_forward(y.data(), x.data(), w.data(), 0, 3, 4);
  linear_forward(y.data(), x.data(), w.data(), 4, 3, 0);
  linear_backward_input(y.data(), x.data(), w.data(), 0, 3, 4, false);
  EXPECT_EQ(y, std::vector<float>(4, 3.0f));
  // No rows: dw += nothing.
  linear_backward_weight(dw.data(), x.data(), x.data(), 0, 3, 4);
  EXPECT_EQ(dw, std::vector<float>(12, 5.0f));
  // in = 0: y is the empty sum (0), or unchanged when accumulating.
  linear_forward(y.data(), x.data(), w.data(), 2, 0, 2);
  EXPECT_EQ(y, std::vector<float>({0.0f, 0.0f, 0.0f, 0.0f}));
  std::fill(y.begin(), y.end(), 3.0f);
  linear_forward(y.data(), x.data(), w.data(), 2, 0, 2, true);
  EXPECT_EQ(y, std::vector<float>(4, 3.0f));
}

TEST(ModelKernelsLinear, GradientsMatchFiniteDifferences) {
  const std::int64_t n = 3, in = 5, out = 4;
  const auto x = randn(n * in, 11), w = randn(out * in, 12), r = randn(n * out, 13);
  std::vector<float> dx(n * in), dw(out * in, 0.0f);
  linear_backward_input(dx.data(), r.data(), w.data(), n, in, out, false);
  linear_backward_weight(dw.data(), r.data(), x.data(), n, in, out);
  const auto wd = to_double(w), xd = to_double(x);
  expect_close(dx, fd_grad([&](const std::vector<double>& v) {
    return weighted_sum(ref_linear(v, wd, n, in, out), r);
  }, xd), kGradRtol, "dx");
  expect_close(dw, fd_grad([&](const std::vector<double>& v) {
    return weighted_sum(ref_linear(xd, v, n, in, out), r);
  }, wd), kGradRtol, "dw");
}

TEST(ModelKernelsLinear, ThreadCountIsKeptAndRunsRepeat) {
  EXPECT_EQ(num_threads(), 1);  // the default, as the config's threads: 1
  const std::int64_t n = 301, in = 257, out = 263;
  const auto x = randn(n * in, 1), w = randn(out * in, 2);
  std::vector<float> one(n * out), two(n * out), again(n * out);
  linear_forward(one.data(), x.data(), w.data(), n, in, out);
  set_num_threads(2);
  EXPECT_EQ(num_threads(), 2);
  linear_forward(two.data(), x.data(), w.data(), n, in, out);
  linear_forward(again.data(), x.data(), w.data(), n, in, out);
  set_num_threads(1);
  // Bit for bit run to run at one thread count; OpenBLAS's threads take other
  // micro-kernel paths at their block edges, so another count rounds differently.
  expect_bits(again, two, "y, second run with 2 threads");
  expect_close(two, to_double(one), kGemmRtol, "y with 2 threads against 1");
  EXPECT_ANY_THROW(set_num_threads(0));
  EXPECT_EQ(num_threads(), 1);
}

// ---------------------------------------------------------------- SwiGLU

template <class T>
std::vector<T> ref_swiglu(const std::vector<T>& g, const std::vector<T>& u) {
  std::vector<T> h(g.size());
  for (std::size_t i = 0; i < g.size(); ++i) {
    const T silu = g[i] / (T(1) + std::exp(-g[i]));
    h[i] = silu * u[i];
  }
  return h;
}

TEST(ModelKernelsSwiglu, ForwardIsTheFormulaBitForBit) {
  for (std::int64_t n : {0, 1, 7, 1000}) {
    auto g = randn(n, 21, 4.0f), u = randn(n, 22);
    if (n >= 7) g[3] = 100.0f, g[4] = -100.0f;  // exp overflow: silu -> -0, no NaN
    std::vector<float> h(n, 9.0f);
    swiglu_forward(h.data(), g.data(), u.data(), n);
    expect_bits(h, ref_swiglu(g, u), "h");
  }
}

TEST(ModelKernelsSwiglu, BackwardMatchesFiniteDifferences) {
  const std::int64_t n = 23;
  const auto g = randn(n, 31, 3.0f), u = randn(n, 32), r = randn(n, 33);
  std::vector<float> dg(n), du(n);
  swiglu_backward(dg.data(), du.data(), r.data(), g.data(), u.data(), n);
  const auto gd = to_double(g), ud = to_double(u);
  expect_close(dg, fd_grad([&](const std::vector<double>& v) {
    return weighted_sum(ref_swiglu(v, ud), r);
  }, gd), kGradRtol, "dg");
  expect_close(du, fd_grad([&](const std::vector<double>& v) {
    return weighted_sum(ref_swiglu(gd, v), r);
  }, ud), kGradRtol, "du");
  // dg may be written over dh.
  auto inplace = r;
  std::vector<float> du2(n);
  swiglu_backward(inplace.data(), du2.data(), inplace.data(), g.data(), u.data(), n);
  expect_bits(inplace, dg, "dg in place");
  expect_bits(du2, du, "du with dg in place");
}

// ---------------------------------------------------------------- MLP

struct MlpData {
  std::int64_t hidden, inter;
  std::vector<float> gate, up, down;
  MlpWeights weights() const { return {gate.data(), up.data(), down.data(), hidden, inter}; }
};

MlpData make_mlp(std::int64_t hidden, std::int64_t inter, std::uint32_t seed) {
  return {hidden, inter, randn(inter * hidden, seed, 0.5f), randn(inter * hidden, seed + 1, 0.5f),
          randn(hidden * inter, seed + 2, 0.5f)};
}

template <class T>
std::vector<T> ref_mlp(const std::vector<T>& x, const std::vector<T>& gate,
                       const std::vector<T>& up, const std::vector<T>& down, std::int64_t n,
                       std::int64_t hidden, std::int64_t inter) {
  const auto g = ref_linear(x, gate, n, hidden, inter);
  const auto u = ref_linear(x, up, n, hidden, inter);
  return ref_linear(ref_swiglu(g, u), down, n, inter, hidden);
}

TEST(ModelKernelsMlp, ForwardMatchesLoopsAndSavesGUH) {
  for (auto [n, hidden, inter] : {std::tuple<std::int64_t, std::int64_t, std::int64_t>{1, 3, 5},
                                  {9, 24, 40}, {31, 67, 45}}) {
    SCOPED_TRACE(::testing::Message() << "n " << n << " hidden " << hidden << " inter " << inter);
    const auto m = make_mlp(hidden, inter, 40);
    const auto x = randn(n * hidden, 41);
    std::vector<float> y(n * hidden, 7.0f), saved(n * 3 * inter, 7.0f);
    mlp_forward(y.data(), saved.data(), x.data(), n, m.weights());
    expect_close(y, ref_mlp(to_double(x), to_double(m.gate), to_double(m.up), to_double(m.down),
                            n, hidden, inter), kGemmRtol, "y");
    const auto g = ref_linear(to_double(x), to_double(m.gate), n, hidden, inter);
    const auto u = ref_linear(to_double(x), to_double(m.up), n, hidden, inter);
    const std::vector<float> sg(saved.begin(), saved.begin() + n * inter),
        su(saved.begin() + n * inter, saved.begin() + 2 * n * inter),
        sh(saved.begin() + 2 * n * inter, saved.end());
    expect_close(sg, g, kGemmRtol, "saved g");
    expect_close(su, u, kGemmRtol, "saved u");
    expect_bits(sh, ref_swiglu(sg, su), "saved h");
    // accumulate: y += the same.
    const auto y1 = y;
    auto y2 = randn(n * hidden, 42);
    const auto base = y2;
    mlp_forward(y2.data(), saved.data(), x.data(), n, m.weights(), true);
    std::vector<double> want(n * hidden);
    for (std::int64_t i = 0; i < n * hidden; ++i) want[i] = double(base[i]) + y1[i];
    expect_close(y2, want, kGemmRtol, "y accumulated");
  }
}

TEST(ModelKernelsMlp, BackwardMatchesFiniteDifferences) {
  const std::int64_t n = 3, hidden = 5, inter = 7;
  const auto m = make_mlp(hidden, inter, 50);
  const auto x = randn(n * hidden, 51), r = randn(n * hidden, 52);
  std::vector<float> y(n * hidden), saved(n * 3 * inter), scratch(3 * n * inter, 7.0f);
  mlp_forward(y.data(), saved.data(), x.data(), n, m.weights());
  // Parameter grads start non-zero: they accumulate.
  const auto g0 = randn(inter * hidden, 53), u0 = randn(inter * hidden, 54),
             d0 = randn(hidden * inter, 55), dx0 = randn(n * hidden, 56);
  auto dgate = g0, dup = u0, ddown = d0;
  std::vector<float> dx(n * hidden, 7.0f);
  mlp_backward(dx.data(), {dgate.data(), dup.data(), ddown.data()}, r.data(), x.data(),
               saved.data(), n, m.weights(), scratch.data(), false);
  for (std::size_t i = 0; i < dgate.size(); ++i) {
    dgate[i] -= g0[i];
    dup[i] -= u0[i];
    ddown[i] -= d0[i];
  }
  const auto xd = to_double(x), gd = to_double(m.gate), ud = to_double(m.up),
             dd = to_double(m.down);
  auto loss = [&](const std::vector<double>& xv, const std::vector<double>& gv,
                  const std::vector<double>& uv, const std::vector<double>& dv) {
    return weighted_sum(ref_mlp(xv, gv, uv, dv, n, hidden, inter), r);
  };
  const double grad_rtol = 1e-3;  // the "-= start" above costs a few bits
  expect_close(dx, fd_grad([&](const auto& v) { return loss(v, gd, ud, dd); }, xd), kGradRtol,
               "dx");
  expect_close(dgate, fd_grad([&](const auto& v) { return loss(xd, v, ud, dd); }, gd), grad_rtol,
               "dgate");
  expect_close(dup, fd_grad([&](const auto& v) { return loss(xd, gd, v, dd); }, ud), grad_rtol,
               "dup");
  expect_close(ddown, fd_grad([&](const auto& v) { return loss(xd, gd, ud, v); }, dd), grad_rtol,
               "ddown");
  // accumulate: dx += the same.
  auto dx2 = dx0;
  std::vector<float> a(inter * hidden, 0.0f), b(inter * hidden, 0.0f), c(hidden * inter, 0.0f);
  mlp_backward(dx2.data(), {a.data(), b.data(), c.data()}, r.data(), x.data(), saved.data(), n,
               m.weights(), scratch.data(), true);
  std::vector<double> want(n * hidden);
  for (std::int64_t i = 0; i < n * hidden; ++i) want[i] = double(dx0[i]) + dx[i];
  expect_close(dx2, want, kGemmRtol, "dx accumulated");
}

TEST(ModelKernelsMlp, ZeroRowsTouchNothing) {
  const auto m = make_mlp(4, 6, 60);
  std::vector<float> y(4, 3.0f), dx(4, 3.0f), gw(24, 1.0f), uw(24, 1.0f), dw(24, 1.0f);
  mlp_forward(y.data(), nullptr, nullptr, 0, m.weights());
  mlp_backward(dx.data(), {gw.data(), uw.data(), dw.data()}, nullptr, nullptr, nullptr, 0,
               m.weights(), nullptr, false);
  EXPECT_EQ(y, std::vector<float>(4, 3.0f));
  EXPECT_EQ(gw, std::vector<float>(24, 1.0f));
  EXPECT_EQ(dw, std::vector<float>(24, 1.0f));
}

// ---------------------------------------------------------------- grouped MLP

TEST(ModelKernelsGroupedMlp, MatchesOneMlpPerGroupIncludingEmptyGroups) {
  const std::int64_t hidden = 12, inter = 10;
  // Groups 0, 2 and 5 are empty; the last one too.
  const std::vector<std::int64_t> offsets = {0, 0, 3, 3, 10, 11, 11, 17, 17};
  const int groups = static_cast<int>(offsets.size()) - 1;
  const std::int64_t rows = offsets.back();
  std::vector<MlpData> data;
  std::vector<MlpWeights> w;
  for (int e = 0; e < groups; ++e) data.push_back(make_mlp(hidden, inter, 70 + 3 * e));
  for (auto& d : data) w.push_back(d.weights());
  const auto x = randn(rows * hidden, 90), dy = randn(rows * hidden, 91);
  std::vector<float> y(rows * hidden, 7.0f), saved(rows * 3 * inter, 7.0f);
  grouped_mlp_forward(y.data(), saved.data(), x.data(), offsets.data(), groups, w.data());

  std::vector<std::vector<float>> dwg(groups), dwu(groups), dwd(groups);
  std::vector<MlpGrads> grads;
  for (int e = 0; e < groups; ++e) {
    dwg[e] = randn(inter * hidden, 100 + e);
    dwu[e] = randn(inter * hidden, 200 + e);
    dwd[e] = randn(hidden * inter, 300 + e);
  }
  const auto dwg0 = dwg, dwu0 = dwu, dwd0 = dwd;
  for (int e = 0; e < groups; ++e) grads.push_back({dwg[e].data(), dwu[e].data(), dwd[e].data()});
  std::int64_t max_rows = 0;
  for (int e = 0; e < groups; ++e) max_rows = std::max(max_rows, offsets[e + 1] - offsets[e]);
  std::vector<float> scratch(3 * max_rows * inter), dx = randn(rows * hidden, 92);
  const auto dx0 = dx;
  grouped_mlp_backward(dx.data(), grads.data(), dy.data(), x.data(), saved.data(), offsets.data(),
                       groups, w.data(), scratch.data(), true);

  for (int e = 0; e < groups; ++e) {
    SCOPED_TRACE(::testing::Message() << "group " << e);
    const std::int64_t r0 = offsets[e], nr = offsets[e + 1] - offsets[e];
    if (nr == 0) {
      expect_bits(dwg[e], dwg0[e], "empty group's dgate untouched");
      expect_bits(dwd[e], dwd0[e], "empty group's ddown untouched");
      continue;
    }
    const std::vector<float> xe(x.begin() + r0 * hidden, x.begin() + (r0 + nr) * hidden),
        dye(dy.begin() + r0 * hidden, dy.begin() + (r0 + nr) * hidden);
    std::vector<float> ye(nr * hidden), se(nr * 3 * inter), sc(3 * nr * inter);
    mlp_forward(ye.data(), se.data(), xe.data(), nr, w[e]);
    expect_bits(std::vector<float>(y.begin() + r0 * hidden, y.begin() + (r0 + nr) * hidden), ye,
                "y");
    expect_bits(std::vector<float>(saved.begin() + r0 * 3 * inter,
                                   saved.begin() + (r0 + nr) * 3 * inter),
                se, "saved");
    std::vector<float> dxe(dx0.begin() + r0 * hidden, dx0.begin() + (r0 + nr) * hidden);
    auto g = dwg0[e], u = dwu0[e], d = dwd0[e];
    mlp_backward(dxe.data(), {g.data(), u.data(), d.data()}, dye.data(), xe.data(), se.data(), nr,
                 w[e], sc.data(), true);
    expect_bits(std::vector<float>(dx.begin() + r0 * hidden, dx.begin() + (r0 + nr) * hidden),
                dxe, "dx");
    expect_bits(dwg[e], g, "dgate");
    expect_bits(dwu[e], u, "dup");
    expect_bits(dwd[e], d, "ddown");
  }
}

// The zero-bubble split: the input half, then (after the scratch is
// clobbered, as the next layer's backward would) the weight half, give the
// fused backward's bits, empty groups included.
TEST(ModelKernelsGroupedMlp, SplitBackwardMatchesFusedBitForBit) {
  const std::int64_t hidden = 11, inter = 9;
  const std::vector<std::int64_t> offsets = {0, 4, 4, 9, 10, 10};
  const int groups = static_cast<int>(offsets.size()) - 1;
  const std::int64_t rows = offsets.back();
  std::vector<MlpData> data;
  std::vector<MlpWeights> w;
  for (int e = 0; e < groups; ++e) data.push_back(make_mlp(hidden, inter, 400 + 3 * e));
  for (auto& d : data) w.push_back(d.weights());
  const auto x = randn(rows * hidden, 410), dy = randn(rows * hidden, 411);
  std::vector<float> y(rows * hidden), saved(rows * 3 * inter);
  grouped_mlp_forward(y.data(), saved.data(), x.data(), offsets.data(), groups, w.data());
  const auto dx0 = randn(rows * hidden, 412);
  std::vector<std::vector<float>> fused(3 * groups), split(3 * groups);
  for (int i = 0; i < 3 * groups; ++i) fused[i] = split[i] = randn(inter * hidden, 420 + i);
  auto grads_of = [&](std::vector<std::vector<float>>& v) {
    std::vector<MlpGrads> g;
    for (int e = 0; e < groups; ++e)
      g.push_back({v[3 * e].data(), v[3 * e + 1].data(), v[3 * e + 2].data()});
    return g;
  };
  for (bool accumulate : {false, true}) {
    SCOPED_TRACE(accumulate ? "accumulate" : "overwrite");
    auto dx_fused = dx0, dx_split = dx0;
    std::vector<float> scratch(3 * 5 * inter, 7.0f), dgu(rows * 2 * inter, 7.0f),
        dh(5 * inter, 7.0f);
    grouped_mlp_backward(dx_fused.data(), grads_of(fused).data(), dy.data(), x.data(), saved.data(),
                         offsets.data(), groups, w.data(), scratch.data(), accumulate);
    grouped_mlp_backward_input(dx_split.data(), dgu.data(), dy.data(), saved.data(), offsets.data(),
                               groups, w.data(), dh.data(), accumulate);
    std::fill(dh.begin(), dh.end(), -3.0f);
    grouped_mlp_backward_weight(grads_of(split).data(), dy.data(), x.data(), saved.data(),
                                dgu.data(), offsets.data(), groups, w.data());
    expect_bits(dx_split, dx_fused, "dx");
    for (int i = 0; i < 3 * groups; ++i) expect_bits(split[i], fused[i], "weight grads");
  }
}

TEST(ModelKernelsGroupedMlp, AllGroupsEmpty) {
  const auto m = make_mlp(4, 6, 60);
  const MlpWeights w[2] = {m.weights(), m.weights()};
  const std::int64_t offsets[3] = {0, 0, 0};
  grouped_mlp_forward(nullptr, nullptr, nullptr, offsets, 2, w);
  grouped_mlp_backward(nullptr, nullptr, nullptr, nullptr, nullptr, offsets, 2, w, nullptr, false);
  grouped_mlp_forward(nullptr, nullptr, nullptr, offsets, 0, w);
}

}  // namespace
}  // namespace epx::kernels
