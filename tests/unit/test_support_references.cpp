// The test-support library's references on hand-made cases whose answers are
// known: the order of the combine sum (node by node, then rank by rank),
// the row positions handed to the y rule, the dispatch order and local ids,
// and what a comparison failure says.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "tests/support/combine_reference.hpp"
#include "tests/support/compare.hpp"
#include "tests/support/dispatch_reference.hpp"
#include "tests/support/low_latency_reference.hpp"

namespace epx::test {
namespace {

Tensor i64(std::vector<std::int64_t> v, std::int64_t rows) {
  Tensor t = Tensor::empty({rows, static_cast<std::int64_t>(v.size()) / rows}, DType::i64);
  if (!v.empty()) std::memcpy(t.raw(), v.data(), v.size() * sizeof(std::int64_t));
  return t;
}

// `rows` tokens per rank, every one routed to `experts` (one expert per
// rank), x = the token index, weights 1.
InputsOf routed_to(std::vector<std::int64_t> experts, std::int64_t rows) {
  return [experts, rows](int) {
    const std::int64_t k = static_cast<std::int64_t>(experts.size());
    RankInputs in;
    in.x = Tensor::empty({rows, 1}, DType::f32);
    std::vector<std::int64_t> idx;
    for (std::int64_t t = 0; t < rows; ++t) {
      in.x.data<float>()[t] = static_cast<float>(t);
      idx.insert(idx.end(), experts.begin(), experts.end());
    }
    in.topk_idx = i64(idx, rows);
    in.topk_weights = Tensor::empty({rows, k}, DType::f32);
    for (std::int64_t i = 0; i < rows * k; ++i) in.topk_weights.data<float>()[i] = 1.0f;
    return in;
  };
}

// Ranks 0, 1 on node 0 and 2, 3 on node 1 return 2^-25, 0, 1 and -1: rank by
// rank the small value is lost in 1 + 2^-25, node by node it is not.
TEST(SupportCombineReference, SumsNodeByNodeThenRankByRank) {
  const std::vector<float> value = {std::ldexp(1.0f, -25), 0.0f, 1.0f, -1.0f};
  const ExpertRows y = [&](int rank, std::int64_t, std::int64_t, float* out) {
    *out = value[rank];
  };
  const InputsOf inputs = routed_to({0, 1, 2, 3}, 1);
  CombineReference f32;
  f32.ydtype = DType::f32;
  const Tensor nodes = expected_combine(Topology{{0, 0, 1, 1}, 4}, 0, inputs, y, f32);
  const Tensor flat = expected_combine(Topology::flat(4, 4), 0, inputs, y, f32);
  EXPECT_EQ(nodes.data<float>()[0], std::ldexp(1.0f, -25));
  EXPECT_EQ(flat.data<float>()[0], 0.0f);
}

// Token t of rank 1 is row 2 + t on every rank: rank 0's two tokens come first.
TEST(SupportCombineReference, HandsTheReceivedRowToTheYRule) {
  std::vector<std::int64_t> seen;
  const ExpertRows y = [&](int rank, std::int64_t row, std::int64_t token, float* out) {
    seen.push_back(rank * 100 + row * 10 + token);
    *out = 0.0f;
  };
  expected_combine(Topology::flat(2, 2), 1, routed_to({0, 1}, 2), y);
  EXPECT_EQ(seen, (std::vector<std::int64_t>{20, 120, 31, 131}));
}

TEST(SupportDispatchReference, RowsBySourceRankThenTokenWithLocalIds) {
  // Rank r's token t goes to experts {t, 3}: rank 1 (experts 2, 3) gets every
  // token once, local ids 1 for expert 3 and 0 for expert 2.
  const InputsOf inputs = [](int) {
    RankInputs in;
    in.x = Tensor::empty({3, 1}, DType::f32);
    for (int t = 0; t < 3; ++t) in.x.data<float>()[t] = static_cast<float>(t);
    in.topk_idx = i64({0, 3, 1, 3, 2, 3}, 3);
    in.topk_weights = Tensor::empty({3, 2}, DType::f32);
    for (int i = 0; i < 6; ++i) in.topk_weights.data<float>()[i] = 0.5f + static_cast<float>(i);
    return in;
  };
  const ExpectedDispatch e = expected_dispatch(Topology::flat(2, 4), 1, inputs, {});
  ASSERT_EQ(e.rows(), 6);
  for (int i = 0; i < 6; ++i) {
    EXPECT_EQ(e.origin[i].rank, i / 3);
    EXPECT_EQ(e.origin[i].token, i % 3);
  }
  EXPECT_EQ(
      compare_tensors("topk_idx", e.topk_idx, i64({-1, 1, -1, 1, 0, 1, -1, 1, -1, 1, 0, 1}, 6)),
      "");
  EXPECT_EQ(e.topk_weights.data<float>()[0], 0.0f);
  EXPECT_EQ(e.topk_weights.data<float>()[5], 5.5f);
  EXPECT_EQ(e.num_recv_tokens_per_expert, (std::vector<int>{2, 6}));
}

// acc = acc + w * y over k ascending; y of expert 0 is 1, of expert 1 2^-24.
TEST(SupportLowLatencyReference, WeightedSumInSlotOrder) {
  const ExpertSlotRows y = [](std::int64_t expert, std::int64_t, std::int64_t, float* out) {
    *out = expert == 0 ? 1.0f : std::ldexp(1.0f, -24);
  };
  const Tensor got =
      expected_low_latency_combine(Topology::flat(1, 2), 0, routed_to({0, 1}, 1), y, DType::f32);
  EXPECT_EQ(got.data<float>()[0], 1.0f);  // 1 + 2^-24 rounds to 1 (ties to even)
}

TEST(SupportCompare, NamesTheRowItsSourceAndTheElement) {
  const Tensor want = i64({1, 2, 3, 4, 5, 6}, 2);
  const Tensor got = i64({1, 2, 3, 4, 9, 6}, 2);
  const std::vector<RowOrigin> origin = {{0, 0}, {3, 7}};
  EXPECT_EQ(compare_tensors("x", got, want, &origin),
            "x: row 1 (from rank 3, token 7), element 1: got 9, expected 5");
  EXPECT_EQ(compare_tensors("x", want, want, &origin), "");
  EXPECT_NE(compare_tensors("x", got, Tensor()), "");
}

}  // namespace
}  // namespace epx::test
