// get_dispatch_layout against plain counting.
#include "comm_fixture.hpp"

namespace epx::test {
namespace {

TEST(Layout, MatchesCounting) {
  Shape s;
  s.tokens = tokens_per_rank(50, {1});
  s.topk = 6;
  s.experts = experts_for(5);
  const int me = world().rank(), R = world().size(), per_rank = s.experts / R;
  comm::Buffer buffer(world(), {std::size_t{1} << 16, 60});
  RankInputs in = make_inputs(s, me);
  comm::Layout got = buffer.get_dispatch_layout(in.topk_idx, s.experts);
  const std::int64_t T = s.tokens[me];
  std::vector<std::int32_t> per_rank_count(R, 0), per_expert(s.experts, 0);
  std::vector<char> in_rank(static_cast<std::size_t>(T * R), 0);
  for (std::int64_t t = 0; t < T; ++t)
    for (int k = 0; k < s.topk; ++k) {
      const std::int64_t e = in.topk_idx.data<std::int64_t>()[t * s.topk + k];
      if (e < 0) continue;
      ++per_expert[e];
      in_rank[t * R + e / per_rank] = 1;
    }
  for (std::int64_t t = 0; t < T; ++t)
    for (int r = 0; r < R; ++r) per_rank_count[r] += in_rank[t * R + r];
  ASSERT_EQ(got.num_tokens_per_rank.dim(0), R);
  ASSERT_EQ(got.num_tokens_per_expert.dim(0), s.experts);
  ASSERT_EQ(got.num_tokens_per_node.dim(0), world().num_nodes());
  ASSERT_EQ(got.is_token_in_rank.dim(0), T);
  for (int r = 0; r < R; ++r) EXPECT_EQ(got.num_tokens_per_rank.data<std::int32_t>()[r], per_rank_count[r]);
  for (int e = 0; e < s.experts; ++e) EXPECT_EQ(got.num_tokens_per_expert.data<std::int32_t>()[e], per_expert[e]);
  for (std::int64_t i = 0; i < T * R; ++i)
    EXPECT_EQ(got.is_token_in_rank.data<bool>()[i], in_rank[i] != 0) << "entry " << i;
  // A token counts once per node that holds any of its experts.
  for (int n = 0; n < world().num_nodes(); ++n) {
    std::int32_t want = 0;
    for (std::int64_t t = 0; t < T; ++t) {
      bool hit = false;
      for (int r = 0; r < R; ++r) hit |= in_rank[t * R + r] && world().node_of(r) == n;
      want += hit;
    }
    EXPECT_EQ(got.num_tokens_per_node.data<std::int32_t>()[n], want) << "node " << n;
  }
}

}  // namespace
}  // namespace epx::test
