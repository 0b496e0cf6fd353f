// The router against a reference built on stable sorts: scores, group-limited
// selection with ties to the lower index, gate weights bit for bit, and the
// gradient wrt the logits by finite differences.
#include <algorithm>
#include <cmath>
#include <numeric>

#include <epx/model_kernels.hpp>

#include "tests/unit/model_kernels_testing.hpp"

namespace epx::kernels {
namespace {

using namespace epx::kernels::ktest;

struct RefRow {
  std::vector<float> scores;
  std::vector<std::int64_t> idx;
  std::vector<float> weights;
};

std::vector<float> ref_scores(const float* l, int E, bool softmax) {
  std::vector<float> s(E);
  if (softmax) {
    const float m = *std::max_element(l, l + E);
    float sum = 0.0f;
    for (int j = 0; j < E; ++j) sum += (s[j] = expf(l[j] - m));
    for (int j = 0; j < E; ++j) s[j] = s[j] / sum;
  } else {
    for (int j = 0; j < E; ++j) s[j] = 1.0f / (1.0f + expf(-l[j]));
  }
  return s;
}

// Indices of `values` restricted to `among`, by descending value, ties in
// `among`'s (ascending) order: a stable sort.
std::vector<std::int64_t> ranked(const std::vector<float>& values,
                                 std::vector<std::int64_t> among) {
  std::stable_sort(among.begin(), among.end(),
                   [&](std::int64_t a, std::int64_t b) { return values[a] > values[b]; });
  return among;
}

RefRow ref_router(const float* l, const float* bias, const RouterParams& p) {
  const int E = p.num_experts;
  RefRow out;
  out.scores = ref_scores(l, E, p.softmax);
  std::vector<float> sb(E);
  for (int j = 0; j < E; ++j) sb[j] = out.scores[j] + bias[j];
  std::vector<std::int64_t> candidates;
  if (p.n_group > 1) {
    const int gs = E / p.n_group;
    std::vector<float> gscore(p.n_group);
    for (int g = 0; g < p.n_group; ++g) {
      std::vector<std::int64_t> members(gs);
      std::iota(members.begin(), members.end(), std::int64_t(g) * gs);
      const auto top = ranked(sb, members);
      gscore[g] = sb[top[0]] + sb[top[1]];
    }
    std::vector<std::int64_t> groups(p.n_group);
    std::iota(groups.begin(), groups.end(), 0);
    auto kept = ranked(gscore, groups);
    kept.resize(p.topk_group);
    for (int j = 0; j < E; ++j)
      if (std::find(kept.begin(), kept.end(), j / gs) != kept.end()) candidates.push_back(j);
  } else {
    candidates.resize(E);
    std::iota(candidates.begin(), candidates.end(), 0);
  }
  out.idx = ranked(sb, candidates);
  out.idx.resize(p.top_k);
  float total = 0.0f;
  for (auto j : out.idx) total += out.scores[j];
  for (auto j : out.idx) out.weights.push_back(out.scores[j] / total * p.routed_scaling_factor);
  return out;
}

struct Outputs {
  std::vector<std::int64_t> idx;
  std::vector<float> weights, scores;
};

Outputs run(const std::vector<float>& logits, const std::vector<float>& bias, std::int64_t n,
            const RouterParams& p) {
  Outputs o{std::vector<std::int64_t>(n * p.top_k, -7), std::vector<float>(n * p.top_k, 7.0f),
            std::vector<float>(n * p.num_experts, 7.0f)};
  router_forward(o.idx.data(), o.weights.data(), o.scores.data(), logits.data(), bias.data(), n, p);
  return o;
}

void expect_matches_reference(const std::vector<float>& logits, const std::vector<float>& bias,
                              std::int64_t n, const RouterParams& p) {
  const auto o = run(logits, bias, n, p);
  for (std::int64_t r = 0; r < n; ++r) {
    SCOPED_TRACE(::testing::Message() << "row " << r);
    const auto want = ref_router(&logits[r * p.num_experts], bias.data(), p);
    EXPECT_EQ(std::vector<std::int64_t>(o.idx.begin() + r * p.top_k,
                                        o.idx.begin() + (r + 1) * p.top_k),
              want.idx);
    expect_bits(std::vector<float>(o.weights.begin() + r * p.top_k,
                                   o.weights.begin() + (r + 1) * p.top_k),
                want.weights, "weights");
    expect_bits(std::vector<float>(o.scores.begin() + r * p.num_experts,
                                   o.scores.begin() + (r + 1) * p.num_experts),
                want.scores, "scores");
  }
}

RouterParams params(int E, int top_k, int n_group, int topk_group, bool softmax, float factor) {
  RouterParams p;
  p.num_experts = E;
  p.top_k = top_k;
  p.n_group = n_group;
  p.topk_group = topk_group;
  p.softmax = softmax;
  p.routed_scaling_factor = factor;
  return p;
}

TEST(ModelKernelsRouter, MatchesReferenceOnRandomLogits) {
  const std::int64_t n = 37;
  for (bool softmax : {false, true}) {
    for (RouterParams p : {params(13, 3, 1, 1, softmax, 1.0f), params(16, 4, 4, 2, softmax, 2.5f),
                           params(24, 6, 8, 3, softmax, 1.0f), params(6, 6, 3, 3, softmax, 0.7f),
                           params(64, 8, 8, 4, softmax, 2.5f)}) {
      SCOPED_TRACE(::testing::Message() << "E " << p.num_experts << " top_k " << p.top_k
                                        << " n_group " << p.n_group << " softmax " << softmax);
      const auto logits = randn(n * p.num_experts, 1, 2.0f);
      const auto bias = randn(p.num_experts, 2, 0.1f);
      expect_matches_reference(logits, bias, n, p);
    }
  }
}

TEST(ModelKernelsRouter, ExactTiesGoToTheLowerIndex) {
  // Every logit equal: s + b ties everywhere (bias 0).
  {
    const auto p = params(12, 4, 1, 1, false, 1.0f);
    const auto o = run(std::vector<float>(12, 0.3f), std::vector<float>(12, 0.0f), 1, p);
    EXPECT_EQ(o.idx, (std::vector<std::int64_t>{0, 1, 2, 3}));
    for (float w : o.weights) EXPECT_EQ(w, 0.25f);
  }
  // Groups tie too: the lower groups stay, then the lower experts.
  {
    const auto p = params(12, 3, 4, 2, true, 1.0f);
    const auto o = run(std::vector<float>(12, -1.0f), std::vector<float>(12, 0.0f), 1, p);
    EXPECT_EQ(o.idx, (std::vector<std::int64_t>{0, 1, 2}));
  }
  // Ties built from the bias (logits 0, s = 0.5): 4 groups of 3.
  //   group 0: 0.9 0.1 0.1 -> 1.0      group 1: 0.6 0.6 0.0 -> 1.2
  //   group 2: 0.0 0.6 0.6 -> 1.2      group 3: 0.55 0.55 0.1 -> 1.1
  // topk_group 1 keeps group 1 (tie with group 2, lower index), not the best expert 0.
  const std::vector<float> sb = {0.9f, 0.1f, 0.1f, 0.6f, 0.6f, 0.0f,
                                 0.0f, 0.6f, 0.6f, 0.55f, 0.55f, 0.1f};
  std::vector<float> bias(12);
  for (int j = 0; j < 12; ++j) bias[j] = sb[j] - 0.5f;
  const std::vector<float> logits(12, 0.0f);
  {
    const auto o = run(logits, bias, 1, params(12, 2, 4, 1, false, 1.0f));
    EXPECT_EQ(o.idx, (std::vector<std::int64_t>{3, 4}));
    // Weights come from s (all 0.5), not s + b.
    EXPECT_EQ(o.weights, (std::vector<float>{0.5f, 0.5f}));
  }
  {
    // Two groups kept: 1 and 2; top 3 of {3,4,5,6,7,8}: 3, 4, 7 (0.6 ties by index).
    const auto o = run(logits, bias, 1, params(12, 3, 4, 2, false, 2.0f));
    EXPECT_EQ(o.idx, (std::vector<std::int64_t>{3, 4, 7}));
    const float w = 0.5f / 1.5f * 2.0f;
    EXPECT_EQ(o.weights, (std::vector<float>{w, w, w}));
  }
  {
    // Without groups, expert 0 (0.9) leads, then the 0.6 ties in index order.
    const auto o = run(logits, bias, 1, params(12, 4, 1, 1, false, 1.0f));
    EXPECT_EQ(o.idx, (std::vector<std::int64_t>{0, 3, 4, 7}));
  }
  expect_matches_reference(logits, bias, 1, params(12, 2, 4, 1, false, 1.0f));
  expect_matches_reference(logits, bias, 1, params(12, 5, 4, 3, false, 1.0f));
}

TEST(ModelKernelsRouter, GroupScoreIsTheSumOfTheTopTwo) {
  // group 0: one high (0.95) and low rest -> 0.95 + 0.05 = 1.0
  // group 1: 0.6 0.5 0.5                 -> 1.1 (wins although its best is lower)
  const std::vector<float> sb = {0.95f, 0.05f, 0.05f, 0.6f, 0.5f, 0.5f};
  std::vector<float> bias(6);
  for (int j = 0; j < 6; ++j) bias[j] = sb[j] - 0.5f;
  const auto o = run(std::vector<float>(6, 0.0f), bias, 1, params(6, 1, 2, 1, false, 1.0f));
  EXPECT_EQ(o.idx, std::vector<std::int64_t>{3});
  EXPECT_EQ(o.weights, std::vector<float>{1.0f});
}

// w_k(logits) with the selection held fixed, in double.
std::vector<double> ref_weights(const std::vector<double>& l, const std::vector<std::int64_t>& idx,
                                std::int64_t n, const RouterParams& p) {
  const int E = p.num_experts, K = p.top_k;
  std::vector<double> w(n * K);
  for (std::int64_t r = 0; r < n; ++r) {
    std::vector<double> s(E);
    if (p.softmax) {
      double m = -INFINITY, sum = 0.0;
      for (int j = 0; j < E; ++j) m = std::max(m, l[r * E + j]);
      for (int j = 0; j < E; ++j) sum += (s[j] = std::exp(l[r * E + j] - m));
      for (auto& v : s) v /= sum;
    } else {
      for (int j = 0; j < E; ++j) s[j] = 1.0 / (1.0 + std::exp(-l[r * E + j]));
    }
    double total = 0.0;
    for (int k = 0; k < K; ++k) total += s[idx[r * K + k]];
    for (int k = 0; k < K; ++k) w[r * K + k] = s[idx[r * K + k]] / total * p.routed_scaling_factor;
  }
  return w;
}

TEST(ModelKernelsRouter, BackwardMatchesFiniteDifferences) {
  const std::int64_t n = 5;
  for (bool softmax : {false, true}) {
    for (RouterParams p : {params(7, 3, 1, 1, softmax, 2.5f), params(12, 4, 4, 2, softmax, 1.0f),
                           params(4, 1, 1, 1, softmax, 1.0f)}) {
      SCOPED_TRACE(::testing::Message() << "E " << p.num_experts << " top_k " << p.top_k
                                        << " softmax " << softmax);
      const auto logits = randn(n * p.num_experts, 3, 1.5f);
      const auto bias = randn(p.num_experts, 4, 0.2f);
      const auto r = randn(n * p.top_k, 5);
      const auto o = run(logits, bias, n, p);
      std::vector<float> dl(n * p.num_experts, 7.0f);
      router_backward(dl.data(), r.data(), o.scores.data(), o.idx.data(), n, p);
      expect_close(dl, fd_grad([&](const auto& l) {
        return weighted_sum(ref_weights(l, o.idx, n, p), r);
      }, to_double(logits)), kGradRtol, "dlogits", 1e-6);  // top_k 1, softmax: w = f, grad 0
    }
  }
}

TEST(ModelKernelsRouter, ZeroRowsAndBadParams) {
  const auto p = params(8, 2, 2, 1, false, 1.0f);
  router_forward(nullptr, nullptr, nullptr, nullptr, nullptr, 0, p);
  router_backward(nullptr, nullptr, nullptr, nullptr, 0, p);
  std::vector<float> l(8, 0.0f), b(8, 0.0f);
  EXPECT_ANY_THROW(run(l, b, 1, params(8, 9, 1, 1, false, 1.0f)));   // top_k > E
  EXPECT_ANY_THROW(run(l, b, 1, params(8, 2, 3, 1, false, 1.0f)));   // 8 % 3
  EXPECT_ANY_THROW(run(l, b, 1, params(8, 2, 8, 1, false, 1.0f)));   // 1 expert per group
  EXPECT_ANY_THROW(run(l, b, 1, params(8, 5, 4, 2, false, 1.0f)));   // top_k > 2 groups * 2
  EXPECT_ANY_THROW(run(l, b, 1, params(8, 2, 4, 5, false, 1.0f)));   // topk_group > n_group
}

}  // namespace
}  // namespace epx::kernels
