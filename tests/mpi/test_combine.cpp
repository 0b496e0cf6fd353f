// Combine against the reference: each token's rows summed in rank order with
// f32 accumulation, rounded once; tokens that went nowhere come back as zeros.
#include "comm_fixture.hpp"

namespace epx::test {
namespace {

// y on this rank: expert_output() of every received row (x already f32).
Tensor make_expert_outputs(const Tensor& recv_x_f32, DType ydtype) {
  const std::int64_t M = recv_x_f32.dim(0), H = recv_x_f32.dim(1);
  Tensor y = Tensor::empty({M, H}, DType::f32);
  const float* x = recv_x_f32.data<float>();
  for (std::int64_t i = 0; i < M * H; ++i) y.data<float>()[i] = expert_output(x[i], world().rank(), i % H);
  return round_to(y, ydtype);
}

// What combine must return on rank `me`: for each token, the sum over the
// ranks holding one of its experts (ascending) of their rounded outputs.
Tensor expected_combine(const Shape& s, int me, DType ydtype) {
  const int R = s.ranks(), K = s.topk, per_rank = s.experts / R;
  const std::int64_t T = s.tokens[me], H = s.hidden;
  RankInputs in = make_inputs(s, me);
  Tensor xf = kernels::cast(in.x, DType::f32);
  Tensor sum = Tensor::zeros({T, H}, DType::f32);
  for (int r = 0; r < R; ++r) {
    Tensor yr = Tensor::empty({T, H}, DType::f32);
    for (std::int64_t i = 0; i < T * H; ++i) yr.data<float>()[i] = expert_output(xf.data<float>()[i], r, i % H);
    Tensor yr_rounded = kernels::cast(round_to(yr, ydtype), DType::f32);
    for (std::int64_t t = 0; t < T; ++t) {
      bool sent = false;
      for (int k = 0; k < K; ++k) {
        const std::int64_t e = in.topk_idx.data<std::int64_t>()[t * K + k];
        sent |= e >= 0 && e / per_rank == r;
      }
      if (!sent) continue;
      for (std::int64_t h = 0; h < H; ++h) sum.data<float>()[t * H + h] += yr_rounded.data<float>()[t * H + h];
    }
  }
  return round_to(sum, ydtype);
}

struct Case {
  const char* name;
  DType xdtype, ydtype;
  std::int64_t hidden;
  std::vector<int> empty_ranks;
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

class CombineTest : public ::testing::TestWithParam<Case> {};

TEST_P(CombineTest, MatchesReference) {
  const Case& c = GetParam();
  Shape s;
  s.tokens = tokens_per_rank(35, c.empty_ranks);
  s.hidden = c.hidden;
  s.topk = 5;
  s.experts = experts_for(3);
  s.dtype = c.xdtype;
  const int me = world().rank();
  comm::Buffer buffer(world(), {std::size_t{1} << 20, 60});
  RankInputs in = make_inputs(s, me);
  comm::Layout layout = buffer.get_dispatch_layout(in.topk_idx, s.experts);
  DispatchResult d = buffer.dispatch(in.x, in.topk_idx, in.topk_weights, layout);
  Tensor y = make_expert_outputs(kernels::cast(d.x, DType::f32), c.ydtype);
  Tensor got = buffer.combine(y, d.handle);
  Tensor want = expected_combine(s, me, c.ydtype);
  ASSERT_EQ(got.dim(0), s.tokens[me]);
  ASSERT_EQ(got.dtype(), c.ydtype);
  const std::size_t eb = dtype_size(c.ydtype);
  expect_rows_equal(static_cast<const std::uint8_t*>(got.raw()),
                    static_cast<const std::uint8_t*>(want.raw()), s.tokens[me],
                    s.hidden * static_cast<std::int64_t>(eb), "combine bytes");
  // Twice in a row: bitwise the same.
  Tensor again = buffer.combine(y, d.handle);
  EXPECT_EQ(std::memcmp(again.raw(), got.raw(), got.nbytes()), 0);
}

INSTANTIATE_TEST_SUITE_P(Shapes, CombineTest,
                         ::testing::Values(Case{"bf16", DType::bf16, DType::bf16, 256, {}},
                                           Case{"f32", DType::f32, DType::f32, 130, {1}},
                                           Case{"bf16_in_f32_out", DType::bf16, DType::f32, 77, {0}},
                                           Case{"f32_in_bf16_out", DType::f32, DType::bf16, 64, {2, 3}}),
                         [](const ::testing::TestParamInfo<Case>& i) { return std::string(i.param.name); });

}  // namespace
}  // namespace epx::test
