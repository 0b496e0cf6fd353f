// Dispatch against the single-process reference: content, order, FP8 bytes
// and scales, local ids, weights, per-expert counts, cached dispatch.
#include "comm_fixture.hpp"

namespace epx::test {
namespace {

struct Case {
  const char* name;
  DType dtype;
  std::int64_t hidden;
  bool fp8;
  bool ue8m0;
  int alignment;
  std::vector<int> empty_ranks;
  std::int64_t base_tokens;
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

// Everything in a dispatch result against the reference (x_scales: defined
// exactly with fp8).
void check_dispatch(const DispatchResult& got, const ExpectedDispatch& want) {
  expect_same("x", got.x, want.x, &want.origin);
  expect_same("x_scales", got.x_scales, want.x_scales, &want.origin);
  expect_same("topk_idx", got.topk_idx, want.topk_idx, &want.origin);
  expect_same("topk_weights", got.topk_weights, want.topk_weights, &want.origin);
  EXPECT_EQ(got.num_recv_tokens_per_expert, want.num_recv_tokens_per_expert);
  EXPECT_EQ(got.handle.num_recv_tokens(), want.rows());
}

class DispatchTest : public ::testing::TestWithParam<Case> {};

TEST_P(DispatchTest, MatchesReference) {
  const Case& c = GetParam();
  Shape s;
  s.tokens = tokens_per_rank(c.base_tokens, c.empty_ranks);
  s.hidden = c.hidden;
  s.topk = 4;
  s.experts = experts_for(3);
  s.dtype = c.dtype;
  const int me = world().rank();
  comm::Buffer buffer(world(), {std::size_t{1} << 20, 60});
  RankInputs in = make_inputs(s, me);
  comm::Layout layout = buffer.get_dispatch_layout(in.topk_idx, s.experts);
  comm::DispatchOptions o;
  o.fp8 = c.fp8;
  o.ue8m0 = c.ue8m0;
  o.expert_alignment = c.alignment;
  ExpectedDispatch want = expected_dispatch(s, me, c.fp8, c.ue8m0, c.alignment);

  DispatchResult first = buffer.dispatch(in.x, in.topk_idx, in.topk_weights, layout, o);
  check_dispatch(first, want);
  // A second call while the first result is alive: same bytes, first untouched.
  DispatchResult second = buffer.dispatch(in.x, in.topk_idx, in.topk_weights, layout, o);
  check_dispatch(second, want);
  check_dispatch(first, want);
  EXPECT_NE(first.x.raw(), second.x.raw());

  // Cached: same routing, a new payload.
  RankInputs in2 = make_inputs(s, me, /*salt=*/99);
  comm::DispatchOptions co;
  co.fp8 = c.fp8;
  co.ue8m0 = c.ue8m0;
  DispatchResult cached = buffer.dispatch(in2.x, first.handle, co);
  ExpectedDispatch want2 = expected_dispatch(s, me, c.fp8, c.ue8m0, c.alignment, 99);
  expect_same("cached x", cached.x, want2.x, &want2.origin);
  expect_same("cached x_scales", cached.x_scales, want2.x_scales, &want2.origin);
  EXPECT_EQ(cached.num_recv_tokens_per_expert, want.num_recv_tokens_per_expert);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, DispatchTest,
    ::testing::Values(Case{"bf16", DType::bf16, 256, false, false, 1, {}, 37},
                      Case{"f32_odd_hidden", DType::f32, 93, false, false, 1, {}, 29},
                      Case{"bf16_odd_hidden", DType::bf16, 200, false, false, 3, {1}, 41},
                      Case{"fp8_bf16", DType::bf16, 384, true, false, 1, {}, 33},
                      Case{"fp8_f32_ue8m0", DType::f32, 256, true, true, 4, {0}, 31},
                      Case{"fp8_bf16_ue8m0_empty", DType::bf16, 128, true, true, 1, {1, 2}, 25},
                      Case{"no_tokens", DType::bf16, 128, false, false, 1, {0, 1, 2, 3, 4, 5, 6, 7}, 0}),
    [](const ::testing::TestParamInfo<Case>& i) { return std::string(i.param.name); });

TEST(Dispatch, PrequantizedInput) {
  Shape s;
  s.tokens = tokens_per_rank(21);
  s.hidden = 256;
  s.experts = experts_for(2);
  const int me = world().rank();
  comm::Buffer buffer(world(), {std::size_t{1} << 20, 60});
  RankInputs in = make_inputs(s, me);
  auto [q, scales] = kernels::per_token_cast_to_fp8(in.x, false);
  comm::Layout layout = buffer.get_dispatch_layout(in.topk_idx, s.experts);
  DispatchResult got =
      buffer.dispatch(comm::Fp8Tensor{q, scales}, in.topk_idx, in.topk_weights, layout);
  check_dispatch(got, expected_dispatch(s, me, true, false, 1));

  // Cached, with a new pre-quantised payload: the bytes and scales as given.
  RankInputs in2 = make_inputs(s, me, /*salt=*/7);
  auto [q2, scales2] = kernels::per_token_cast_to_fp8(in2.x, false);
  DispatchResult cached = buffer.dispatch(comm::Fp8Tensor{q2, scales2}, got.handle);
  const ExpectedDispatch want2 = expected_dispatch(s, me, true, false, 1, 7);
  expect_same("cached x", cached.x, want2.x, &want2.origin);
  expect_same("cached x_scales", cached.x_scales, want2.x_scales, &want2.origin);
}

TEST(Dispatch, AllTokensWithoutExperts) {
  Shape s;
  s.tokens = tokens_per_rank(9);
  s.experts = experts_for(2);
  s.all_empty_every = 1;
  const int me = world().rank();
  comm::Buffer buffer(world(), {std::size_t{1} << 16, 60});
  RankInputs in = make_inputs(s, me);
  comm::Layout layout = buffer.get_dispatch_layout(in.topk_idx, s.experts);
  DispatchResult got = buffer.dispatch(in.x, in.topk_idx, in.topk_weights, layout);
  EXPECT_EQ(got.x.dim(0), 0);
  Tensor back = buffer.combine(Tensor::empty({0, s.hidden}, DType::bf16), got.handle);
  ASSERT_EQ(back.dim(0), s.tokens[me]);
  const auto* b = back.data<std::uint16_t>();
  EXPECT_TRUE(std::all_of(b, b + back.numel(), [](std::uint16_t v) { return v == 0; }));
}

TEST(Dispatch, SeveralTimesLargerThanTheBuffer) {
  Shape s;
  s.tokens = tokens_per_rank(300);
  s.hidden = 512;
  s.experts = experts_for(2);
  const int me = world().rank();
  // 64 KiB of receive space for ~300 KiB+ per rank: the space must grow.
  comm::Buffer buffer(world(), {std::size_t{64} << 10, 60});
  const std::size_t before = buffer.capacity_bytes();
  RankInputs in = make_inputs(s, me);
  comm::Layout layout = buffer.get_dispatch_layout(in.topk_idx, s.experts);
  ExpectedDispatch want = expected_dispatch(s, me, false, false, 1);
  DispatchResult a = buffer.dispatch(in.x, in.topk_idx, in.topk_weights, layout);
  DispatchResult b = buffer.dispatch(in.x, in.topk_idx, in.topk_weights, layout);
  check_dispatch(a, want);
  check_dispatch(b, want);
  if (want.rows() * s.hidden * 2 > static_cast<std::int64_t>(before)) {
    EXPECT_GT(buffer.capacity_bytes(), before);
  }
}

TEST(Dispatch, ResultOutlivesBuffer) {
  Shape s;
  s.tokens = tokens_per_rank(17);
  s.experts = experts_for(2);
  const int me = world().rank();
  DispatchResult kept;
  {
    comm::Buffer buffer(world(), {std::size_t{1} << 20, 60});
    RankInputs in = make_inputs(s, me);
    comm::Layout layout = buffer.get_dispatch_layout(in.topk_idx, s.experts);
    kept = buffer.dispatch(in.x, in.topk_idx, in.topk_weights, layout);
  }
  check_dispatch(kept, expected_dispatch(s, me, false, false, 1));
}

}  // namespace
}  // namespace epx::test
