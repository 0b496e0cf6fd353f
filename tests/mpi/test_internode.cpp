// Across nodes: the bytes that cross between nodes are what the hierarchical
// scheme moves (each token once per destination node, each partial sum once
// per node), counted by the transport; the partials-in-input-dtype option.
#include "combine_reference.hpp"

namespace epx::test {
namespace {

bool hierarchical() { return world().num_nodes() > 1 && world().local_size() > 1; }

struct Counts {
  std::uint64_t dispatch = 0, combine = 0;
};

// What this rank must send to other nodes, from its layout: a token once per
// remote node (hierarchical) or once per remote rank (one rank per node),
// with its scales and top-k; a forwarding header of 32 bytes per rank of the
// node per non-empty batch. Combine: one partial (or y row) per token and node.
Counts expected_bytes(const comm::Layout& layout, std::int64_t hidden, std::size_t wire_size,
                      std::int64_t scales, std::int64_t topk, std::size_t partial_size,
                      std::size_t y_size) {
  const int me = world().rank();
  const std::uint64_t row = static_cast<std::uint64_t>(hidden) * wire_size +
                            static_cast<std::uint64_t>(scales) * 4 + static_cast<std::uint64_t>(topk) * 12;
  Counts c;
  if (hierarchical()) {
    for (int n = 0; n < world().num_nodes(); ++n) {
      if (n == world().node()) continue;
      const std::uint64_t b = static_cast<std::uint64_t>(layout.num_tokens_per_node.data<std::int32_t>()[n]);
      if (b) c.dispatch += b * row + 32u * static_cast<std::uint64_t>(world().local_size());
      c.combine += b * static_cast<std::uint64_t>(hidden) * partial_size;
    }
  } else {
    for (int r = 0; r < world().size(); ++r) {
      if (world().node_of(r) == world().node_of(me)) continue;
      const std::uint64_t rows = static_cast<std::uint64_t>(layout.num_tokens_per_rank.data<std::int32_t>()[r]);
      c.dispatch += rows * row;
      c.combine += rows * static_cast<std::uint64_t>(hidden) * y_size;
    }
  }
  return c;
}

// The combine byte count is what this rank's tokens bring back; it is sent by
// the forwarders, so the check sums over all ranks.
std::uint64_t sum_over_ranks(std::uint64_t v) {
  std::uint64_t total = 0;
  MPI_Allreduce(&v, &total, 1, MPI_UINT64_T, MPI_SUM, MPI_COMM_WORLD);
  return total;
}

TEST(Internode, BytesAreOncePerDestinationNode) {
  for (bool fp8 : {false, true}) {
    for (bool bf16_partials : {false, true}) {
      Shape s;
      s.tokens = tokens_per_rank(41, {1});
      s.hidden = 256;
      s.topk = 6;
      s.experts = experts_for(3);
      s.seed = 17;
      const int me = world().rank();
      comm::Buffer buffer(world(), {std::size_t{1} << 20, 60});
      RankInputs in = make_inputs(s, me);
      comm::Layout layout = buffer.get_dispatch_layout(in.topk_idx, s.experts);
      comm::DispatchOptions o;
      o.fp8 = fp8;
      const std::uint64_t before = buffer.internode_bytes();
      DispatchResult d = buffer.dispatch(in.x, in.topk_idx, in.topk_weights, layout, o);
      const std::uint64_t dispatched = buffer.internode_bytes() - before;
      Tensor y = kernels::cast(kernels::cast(d.x, DType::f32), DType::bf16);
      comm::CombineOptions co;
      co.partials_in_input_dtype = bf16_partials;
      const std::uint64_t before_combine = buffer.internode_bytes();
      Tensor got = buffer.combine(y, d.handle, co);
      const std::uint64_t combined = buffer.internode_bytes() - before_combine;

      const Counts want = expected_bytes(layout, s.hidden, fp8 ? 1 : 2, fp8 ? s.hidden / 128 : 0,
                                         s.topk, bf16_partials ? 2 : 4, 2);
      EXPECT_EQ(dispatched, want.dispatch) << "fp8 " << fp8;
      EXPECT_EQ(sum_over_ranks(combined), sum_over_ranks(want.combine)) << "bf16 partials " << bf16_partials;
      // Never more than a flat scheme: once per destination rank.
      std::uint64_t flat = 0;
      for (int r = 0; r < world().size(); ++r)
        if (world().node_of(r) != world().node())
          flat += static_cast<std::uint64_t>(layout.num_tokens_per_rank.data<std::int32_t>()[r]);
      EXPECT_LE(dispatched, flat * (s.hidden * (fp8 ? 1 : 2) + (fp8 ? s.hidden / 128 * 4 : 0) + s.topk * 12) +
                                32u * world().local_size() * world().num_nodes());
    }
  }
}

// Partials in bf16 cross nodes rounded: the result follows the documented order.
TEST(Internode, PartialsInInputDtypeMatchReference) {
  Shape s;
  s.tokens = tokens_per_rank(29, {0});
  s.hidden = 200;
  s.topk = 5;
  s.experts = experts_for(3);
  const int me = world().rank();
  comm::Buffer buffer(world(), {std::size_t{1} << 20, 60});
  RankInputs in = make_inputs(s, me);
  comm::Layout layout = buffer.get_dispatch_layout(in.topk_idx, s.experts);
  DispatchResult d = buffer.dispatch(in.x, in.topk_idx, in.topk_weights, layout);
  Tensor y = make_expert_outputs(kernels::cast(d.x, DType::f32), DType::bf16);
  comm::CombineOptions co;
  co.partials_in_input_dtype = true;
  Tensor got = buffer.combine(y, d.handle, co);
  Tensor want = expected_combine(s, me, DType::bf16, /*partials_in_input_dtype=*/true);
  expect_same("combine, bf16 partials", got, want);
}

// A rank with no tokens may hand in empty tensors without storage (null data
// pointers, as frameworks do): dispatch, cached dispatch and combine work.
TEST(Internode, EmptyRankWithNullTensors) {
  Shape s;
  s.tokens = tokens_per_rank(23, {1});
  s.hidden = 128;
  s.topk = 3;
  s.experts = experts_for(2);
  const int me = world().rank();
  comm::Buffer buffer(world(), {std::size_t{1} << 20, 60});
  RankInputs in = make_inputs(s, me);
  if (s.tokens[me] == 0) {
    in.x = Tensor::wrap(nullptr, {0, s.hidden}, s.dtype);
    in.topk_idx = Tensor::wrap(nullptr, {0, s.topk}, DType::i64);
    in.topk_weights = Tensor::wrap(nullptr, {0, s.topk}, DType::f32);
  }
  comm::Layout layout = buffer.get_dispatch_layout(in.topk_idx, s.experts);
  DispatchResult d = buffer.dispatch(in.x, in.topk_idx, in.topk_weights, layout);
  const ExpectedDispatch want = expected_dispatch(s, me, false, false, 1);
  // No ASSERT before the collectives below (see test_combine.cpp).
  expect_same("x", d.x, want.x, &want.origin);
  DispatchResult again = buffer.dispatch(in.x, d.handle);
  EXPECT_EQ(again.x.dim(0), want.rows());
  Tensor y = make_expert_outputs(kernels::cast(d.x, DType::f32), DType::bf16);
  Tensor got = buffer.combine(y, d.handle);
  Tensor expect = expected_combine(s, me, DType::bf16);
  expect_same("combine", got, expect);
  EXPECT_FALSE(world().aborted());
}

// Ranks that disagree on the option fail together, naming the rank.
TEST(Internode, DisagreeingPartialsOptionIsAnErrorOnEveryRank) {
  if (world().size() < 2) GTEST_SKIP() << "needs 2 ranks";
  Shape s;
  s.tokens = tokens_per_rank(10);
  s.experts = experts_for(2);
  const int me = world().rank();
  comm::Buffer buffer(world(), {std::size_t{1} << 20, 60});
  RankInputs in = make_inputs(s, me);
  comm::Layout layout = buffer.get_dispatch_layout(in.topk_idx, s.experts);
  DispatchResult d = buffer.dispatch(in.x, in.topk_idx, in.topk_weights, layout);
  Tensor y = kernels::cast(kernels::cast(d.x, DType::f32), DType::bf16);
  comm::CombineOptions co;
  co.partials_in_input_dtype = me == 1;
  try {
    buffer.combine(y, d.handle, co);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::InvalidArgument);
    EXPECT_NE(std::string(e.what()).find("partials_in_input_dtype"), std::string::npos) << e.what();
  }
  // The buffer stays usable.
  Tensor again = buffer.combine(y, d.handle);
  EXPECT_EQ(again.dim(0), s.tokens[me]);
}

}  // namespace
}  // namespace epx::test
