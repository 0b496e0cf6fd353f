// The layout kernel with several nodes, against plain counting.
#include <gtest/gtest.h>

#include <random>
#include <set>
#include <vector>

#include "kernels/layout.hpp"

namespace epx::kernels {
namespace {

TEST(LayoutKernel, CountsPerRankNodeAndExpertWithUnevenNodes) {
  const int R = 5, E = 15, K = 4, N = 3;
  const std::int64_t T = 301;
  const std::vector<int> node_of = {0, 0, 1, 1, 2};  // the last node has one rank
  std::mt19937 rng(5);
  std::vector<std::int64_t> idx(T * K);
  for (std::int64_t t = 0; t < T; ++t) {
    std::set<std::int64_t> used;
    for (int k = 0; k < K; ++k) {
      std::int64_t e;
      do e = static_cast<std::int64_t>(rng() % (E + 3)) - 3;  // some -1..-3 -> -1
      while (e >= 0 && used.count(e));
      if (e < 0) e = -1;
      used.insert(e);
      idx[t * K + k] = e;
    }
  }
  std::vector<std::int32_t> per_rank(R), per_node(N), per_expert(E);
  std::vector<char> in_rank_raw(T * R);
  LayoutArgs a;
  a.topk_idx = idx.data();
  a.num_tokens = T;
  a.num_topk = K;
  a.num_experts = E;
  a.num_ranks = R;
  a.node_of_rank = node_of.data();
  a.num_nodes = N;
  a.tokens_per_rank = per_rank.data();
  a.tokens_per_node = per_node.data();
  a.tokens_per_expert = per_expert.data();
  a.token_in_rank = reinterpret_cast<bool*>(in_rank_raw.data());
  compute_dispatch_layout(a);

  std::vector<std::int32_t> want_rank(R), want_node(N), want_expert(E);
  for (std::int64_t t = 0; t < T; ++t) {
    std::set<int> ranks, nodes;
    for (int k = 0; k < K; ++k) {
      const std::int64_t e = idx[t * K + k];
      if (e < 0) continue;
      ++want_expert[e];
      ranks.insert(static_cast<int>(e / (E / R)));
      nodes.insert(node_of[e / (E / R)]);
    }
    for (int r : ranks) ++want_rank[r];
    for (int n : nodes) ++want_node[n];
    for (int r = 0; r < R; ++r) EXPECT_EQ(in_rank_raw[t * R + r] != 0, ranks.count(r) == 1);
  }
  EXPECT_EQ(per_rank, want_rank);
  EXPECT_EQ(per_node, want_node);
  EXPECT_EQ(per_expert, want_expert);
}

TEST(LayoutKernel, NoTokens) {
  std::vector<std::int32_t> per_rank(2, 7), per_node(1, 7), per_expert(4, 7);
  const std::vector<int> node_of = {0, 0};
  LayoutArgs a;
  a.num_tokens = 0;
  a.num_topk = 2;
  a.num_experts = 4;
  a.num_ranks = 2;
  a.node_of_rank = node_of.data();
  a.tokens_per_rank = per_rank.data();
  a.tokens_per_node = per_node.data();
  a.tokens_per_expert = per_expert.data();
  compute_dispatch_layout(a);
  EXPECT_EQ(per_rank, std::vector<std::int32_t>(2, 0));
  EXPECT_EQ(per_node, std::vector<std::int32_t>(1, 0));
  EXPECT_EQ(per_expert, std::vector<std::int32_t>(4, 0));
}

}  // namespace
}  // namespace epx::kernels
