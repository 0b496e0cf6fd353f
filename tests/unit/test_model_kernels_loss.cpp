// Cross-entropy and AdamW against the header's formulas bit for bit, the
// cross-entropy gradient by finite differences and with large logits.
#include <cmath>

#include <epx/model_kernels.hpp>

#include "tests/unit/model_kernels_testing.hpp"

namespace epx::kernels {
namespace {

using namespace epx::kernels::ktest;

// ---------------------------------------------------------------- cross-entropy

void ref_cross_entropy(std::vector<float>& losses, std::vector<float>& lse,
                       const std::vector<float>& logits, const std::vector<std::int32_t>& t,
                       std::int64_t vocab) {
  const std::size_t n = t.size();
  losses.resize(n);
  lse.resize(n);
  for (std::size_t i = 0; i < n; ++i) {
    const float* l = &logits[i * vocab];
    float m = l[0];
    for (std::int64_t j = 1; j < vocab; ++j) m = std::max(m, l[j]);
    float sum = 0.0f;
    for (std::int64_t j = 0; j < vocab; ++j) sum += expf(l[j] - m);
    lse[i] = m + logf(sum);
    losses[i] = lse[i] - l[t[i]];
  }
}

std::vector<std::int32_t> targets(std::size_t n, std::int64_t vocab, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<std::int32_t> u(0, static_cast<std::int32_t>(vocab - 1));
  std::vector<std::int32_t> t(n);
  for (auto& v : t) v = u(rng);
  if (n > 1) t[0] = 0, t[1] = static_cast<std::int32_t>(vocab - 1);
  return t;
}

TEST(ModelKernelsCrossEntropy, ForwardAndBackwardAreTheFormulaBitForBit) {
  for (auto [n, vocab] : {std::pair<std::int64_t, std::int64_t>{0, 5}, {1, 1}, {3, 7}, {17, 257},
                          {4, 1000}}) {
    SCOPED_TRACE(::testing::Message() << "n " << n << " vocab " << vocab);
    const auto logits = randn(n * vocab, 1, 3.0f);
    const auto t = targets(n, vocab, 2);
    std::vector<float> losses(n, 7.0f), lse(n, 7.0f), want_losses, want_lse;
    cross_entropy_forward(losses.data(), lse.data(), logits.data(), t.data(), n, vocab);
    ref_cross_entropy(want_losses, want_lse, logits, t, vocab);
    expect_bits(losses, want_losses, "losses");
    expect_bits(lse, want_lse, "lse");

    const float scale = 1.0f / 3.0f;
    std::vector<float> d(n * vocab, 7.0f), want(n * vocab);
    cross_entropy_backward(d.data(), logits.data(), lse.data(), t.data(), n, vocab, scale);
    for (std::int64_t i = 0; i < n; ++i)
      for (std::int64_t j = 0; j < vocab; ++j)
        want[i * vocab + j] =
            (expf(logits[i * vocab + j] - lse[i]) - (j == t[i] ? 1.0f : 0.0f)) * scale;
    expect_bits(d, want, "dlogits");
    // In place over the logits.
    auto inplace = logits;
    cross_entropy_backward(inplace.data(), inplace.data(), lse.data(), t.data(), n, vocab, scale);
    expect_bits(inplace, want, "dlogits in place");
  }
}

TEST(ModelKernelsCrossEntropy, GradientMatchesFiniteDifferences) {
  const std::int64_t n = 4, vocab = 9;
  const float scale = 0.25f;
  const auto logits = randn(n * vocab, 3, 2.0f);
  const auto t = targets(n, vocab, 4);
  std::vector<float> losses(n), lse(n), d(n * vocab);
  cross_entropy_forward(losses.data(), lse.data(), logits.data(), t.data(), n, vocab);
  cross_entropy_backward(d.data(), logits.data(), lse.data(), t.data(), n, vocab, scale);
  // L = scale * sum_i loss_i, in double.
  expect_close(d, fd_grad([&](const std::vector<double>& l) {
    double total = 0.0;
    for (std::int64_t i = 0; i < n; ++i) {
      double m = l[i * vocab], sum = 0.0;
      for (std::int64_t j = 1; j < vocab; ++j) m = std::max(m, l[i * vocab + j]);
      for (std::int64_t j = 0; j < vocab; ++j) sum += std::exp(l[i * vocab + j] - m);
      total += m + std::log(sum) - l[i * vocab + t[i]];
    }
    return scale * total;
  }, to_double(logits)), kGradRtol, "dlogits");
}

TEST(ModelKernelsCrossEntropy, LargeLogitsStayFinite) {
  const std::int64_t n = 3, vocab = 50;
  auto logits = randn(n * vocab, 5, 2.0f);
  const auto t = targets(n, vocab, 6);
  std::vector<float> base_losses(n), lse(n);
  cross_entropy_forward(base_losses.data(), lse.data(), logits.data(), t.data(), n, vocab);
  // Shift by 1e4 (a naive exp overflows at 88) and put one row near FLT_MAX's log range.
  for (auto& v : logits) v += 1e4f;
  logits[0] = 3e38f;
  std::vector<float> losses(n), d(n * vocab);
  cross_entropy_forward(losses.data(), lse.data(), logits.data(), t.data(), n, vocab);
  cross_entropy_backward(d.data(), logits.data(), lse.data(), t.data(), n, vocab, 1.0f);
  for (float v : losses) EXPECT_TRUE(std::isfinite(v));
  for (float v : d) EXPECT_TRUE(std::isfinite(v));
  // A shift of 1e4 rounds the logits to ~1e-3: the loss stays within that.
  for (std::int64_t i = 1; i < n; ++i) EXPECT_NEAR(losses[i], base_losses[i], 5e-3) << i;
  // Row 0: the huge logit takes all the mass.
  EXPECT_EQ(d[0], t[0] == 0 ? 0.0f : 1.0f);
}

TEST(ModelKernelsCrossEntropy, RejectsOutOfRangeTargets) {
  std::vector<float> logits(6, 0.0f), losses(2), lse(2);
  const std::vector<std::int32_t> t = {1, 3};
  EXPECT_ANY_THROW(cross_entropy_forward(losses.data(), lse.data(), logits.data(), t.data(), 2, 3));
}

// ---------------------------------------------------------------- AdamW

TEST(ModelKernelsAdamW, ScalarsAreRoundedOnceFromDouble) {
  const AdamWScalars s = adamw_scalars(1e-3, 0.9, 0.999, 1e-8, 0.1, 1);
  EXPECT_EQ(s.beta1, 0.9f);
  EXPECT_EQ(s.beta2, 0.999f);
  EXPECT_EQ(s.one_minus_beta1, 0.1f);
  // 1 - 0.999 in double, then f32: 0.001f; the f32 difference would be 0.00099998713.
  EXPECT_EQ(s.one_minus_beta2, 0.001f);
  EXPECT_NE(s.one_minus_beta2, 1.0f - 0.999f);
  EXPECT_EQ(s.eps, 1e-8f);
  EXPECT_EQ(s.decay, 0.9999f);                       // 1 - 1e-3 * 0.1
  EXPECT_EQ(s.step_size, 0.01f);                     // 1e-3 / (1 - 0.9)
  EXPECT_EQ(s.bias_correction2_sqrt, 0.0316227766f);  // sqrt(1 - 0.999) = sqrt(0.001)

  const AdamWScalars s2 = adamw_scalars(3e-4, 0.9, 0.95, 1e-8, 0.0, 2);
  EXPECT_EQ(s2.decay, 1.0f);
  EXPECT_FLOAT_EQ(s2.step_size, 3e-4f / 0.19f);                // 1 - 0.81
  EXPECT_FLOAT_EQ(s2.bias_correction2_sqrt, 0.31224990f);      // sqrt(1 - 0.9025)
  EXPECT_EQ(s2.step_size, static_cast<float>(3e-4 / (1.0 - 0.9 * 0.9)));
  EXPECT_ANY_THROW(adamw_scalars(1e-3, 0.9, 0.95, 1e-8, 0.1, 0));
}

TEST(ModelKernelsAdamW, StepsMatchTheFormulasBitForBit) {
  for (std::int64_t n : {0, 1, 1003}) {
    for (double wd : {0.0, 0.1}) {
      SCOPED_TRACE(::testing::Message() << "n " << n << " weight_decay " << wd);
      auto p = randn(n, 1), m = std::vector<float>(n, 0.0f), v = std::vector<float>(n, 0.0f);
      auto rp = p, rm = m, rv = v;
      for (std::int64_t t = 1; t <= 5; ++t) {
        auto g = randn(n, 10 + t, 0.1f);
        if (n > 0 && t == 3) g[0] = 0.0f;  // a zero gradient still moves p (decay, momentum)
        const double lr = 1e-2 * t / 5.0;
        const AdamWScalars s = adamw_scalars(lr, 0.9, 0.95, 1e-8, wd, t);
        adamw_step(p.data(), m.data(), v.data(), g.data(), n, s);
        // The header's formulas, one rounding per operation.
        const float decay = static_cast<float>(1.0 - lr * wd);
        const float step = static_cast<float>(lr / (1.0 - std::pow(0.9, double(t))));
        const float bc2 = static_cast<float>(std::sqrt(1.0 - std::pow(0.95, double(t))));
        for (std::int64_t i = 0; i < n; ++i) {
          rp[i] = rp[i] * decay;
          rm[i] = 0.9f * rm[i] + 0.1f * g[i];
          rv[i] = 0.95f * rv[i] + static_cast<float>(1.0 - 0.95) * g[i] * g[i];
          rp[i] = rp[i] - step * (rm[i] / (sqrtf(rv[i]) / bc2 + 1e-8f));
        }
        expect_bits(p, rp, "p");
        expect_bits(m, rm, "m");
        expect_bits(v, rv, "v");
      }
    }
  }
}

}  // namespace
}  // namespace epx::kernels
