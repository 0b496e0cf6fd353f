// One rank's bad input gives every rank an InvalidArgument before any data
// moves, with a message naming the argument, the value and the rank; and the
// buffer stays usable afterwards.
#include <functional>
#include <string>

#include "comm_fixture.hpp"

namespace epx::test {
namespace {

constexpr std::int64_t kHidden = 256;

struct Inputs {
  Shape s;
  RankInputs in;
  Inputs() {
    s.tokens = tokens_per_rank(12);
    s.hidden = kHidden;
    s.experts = experts_for(2);
    in = make_inputs(s, world().rank());
  }
};

int bad_rank() { return world().size() - 1; }

// Runs `call` on every rank; expects InvalidArgument everywhere, with `needle`
// in the bad rank's message and "rank <bad>" in the others'.
void expect_everyone_fails(const std::function<void()>& call, const std::string& needle) {
  const int me = world().rank();
  try {
    call();
    ADD_FAILURE() << "no error on rank " << me << " (expected InvalidArgument about " << needle << ")";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::InvalidArgument) << e.what();
    EXPECT_FALSE(e.poisoned()) << "an agreed error leaves the buffer usable: " << e.what();
    const std::string msg = e.what();
    if (me == bad_rank()) {
      EXPECT_NE(msg.find(needle), std::string::npos) << msg;
    } else {
      EXPECT_NE(msg.find("rank " + std::to_string(bad_rank())), std::string::npos) << msg;
    }
  }
}

// After an error the same buffer still works: a good dispatch and combine.
void expect_still_usable(comm::Buffer& buffer, const Inputs& u) {
  comm::Layout layout = buffer.get_dispatch_layout(u.in.topk_idx, u.s.experts);
  DispatchResult d = buffer.dispatch(u.in.x, u.in.topk_idx, u.in.topk_weights, layout);
  EXPECT_EQ(d.x.dim(0), expected_dispatch(u.s, world().rank(), false, false, 1).rows());
  Tensor back = buffer.combine(d.x, d.handle);
  EXPECT_EQ(back.dim(0), u.s.tokens[world().rank()]);
}

TEST(BadInput, ExpertIdOutOfRange) {
  Inputs u;
  comm::Buffer buffer(world(), {std::size_t{1} << 20, 30});
  Tensor idx = u.in.topk_idx.clone();
  if (world().rank() == bad_rank()) idx.data<std::int64_t>()[1] = u.s.experts + 5;
  expect_everyone_fails([&] { buffer.get_dispatch_layout(idx, u.s.experts); },
                        "topk_idx[0,1] = " + std::to_string(u.s.experts + 5));
  if (world().rank() == bad_rank()) idx.data<std::int64_t>()[1] = -2;
  expect_everyone_fails([&] { buffer.get_dispatch_layout(idx, u.s.experts); }, "= -2");
  expect_still_usable(buffer, u);
}

TEST(BadInput, RepeatedExpert) {
  Inputs u;
  comm::Buffer buffer(world(), {std::size_t{1} << 20, 30});
  Tensor idx = u.in.topk_idx.clone();
  if (world().rank() == bad_rank()) {
    idx.data<std::int64_t>()[4 * 2 + 0] = 1;
    idx.data<std::int64_t>()[4 * 2 + 3] = 1;
  }
  expect_everyone_fails([&] { buffer.get_dispatch_layout(idx, u.s.experts); }, "repeats");
  expect_still_usable(buffer, u);
}

TEST(BadInput, ExpertsNotDivisibleByGroup) {
  Inputs u;
  comm::Buffer buffer(world(), {std::size_t{1} << 20, 30});
  const int e = world().rank() == bad_rank() ? u.s.experts + 1 : u.s.experts;
  // With one rank every count divides; use 0 then.
  const int bad = world().size() == 1 ? 0 : e;
  expect_everyone_fails([&] { buffer.get_dispatch_layout(u.in.topk_idx, world().rank() == bad_rank() ? bad : u.s.experts); },
                        "num_experts = " + std::to_string(world().size() == 1 ? 0 : e));
  expect_still_usable(buffer, u);
}

TEST(BadInput, ShapeAndDtypeMismatches) {
  Inputs u;
  comm::Buffer buffer(world(), {std::size_t{1} << 20, 30});
  comm::Layout layout = buffer.get_dispatch_layout(u.in.topk_idx, u.s.experts);
  const bool bad = world().rank() == bad_rank();
  const std::int64_t T = u.s.tokens[world().rank()];
  Tensor x_short = Tensor::empty({T + 1, kHidden}, DType::bf16);
  expect_everyone_fails([&] { buffer.dispatch(bad ? x_short : u.in.x, u.in.topk_idx, u.in.topk_weights, layout); },
                        "x is bf16[" + std::to_string(T + 1));
  Tensor w_i32 = Tensor::empty({T, u.s.topk}, DType::i32);
  expect_everyone_fails([&] { buffer.dispatch(u.in.x, u.in.topk_idx, bad ? w_i32 : u.in.topk_weights, layout); },
                        "topk_weights is i32");
  Tensor x_i64 = Tensor::empty({T, kHidden}, DType::i64);
  expect_everyone_fails([&] { buffer.dispatch(bad ? x_i64 : u.in.x, u.in.topk_idx, u.in.topk_weights, layout); },
                        "expected dtype f32 or bf16 or e4m3");
  expect_still_usable(buffer, u);
}

TEST(BadInput, Fp8NeedsHiddenMultipleOf128) {
  Inputs u;
  comm::Buffer buffer(world(), {std::size_t{1} << 20, 30});
  const std::int64_t T = u.s.tokens[world().rank()];
  Tensor x = world().rank() == bad_rank() ? Tensor::zeros({T, 200}, DType::bf16) : u.in.x;
  comm::Layout layout = buffer.get_dispatch_layout(u.in.topk_idx, u.s.experts);
  comm::DispatchOptions o;
  o.fp8 = true;
  expect_everyone_fails([&] { buffer.dispatch(x, u.in.topk_idx, u.in.topk_weights, layout, o); },
                        "hidden = x.dim(1) = 200");
  expect_still_usable(buffer, u);
}

// An e4m3 payload goes with its scales, as an Fp8Tensor; each way of getting
// that wrong is refused on every rank, also in the cached dispatch.
TEST(BadInput, Fp8PayloadAndItsScales) {
  Inputs u;
  comm::Buffer buffer(world(), {std::size_t{1} << 20, 30});
  comm::Layout layout = buffer.get_dispatch_layout(u.in.topk_idx, u.s.experts);
  const bool bad = world().rank() == bad_rank();
  const std::int64_t T = u.s.tokens[world().rank()];
  auto [q, scales] = kernels::per_token_cast_to_fp8(u.in.x, false);
  const comm::Fp8Tensor good{q, scales};
  // An e4m3 Tensor alone: its scales are missing.
  expect_everyone_fails(
      [&] {
        if (bad)
          buffer.dispatch(q, u.in.topk_idx, u.in.topk_weights, layout);
        else
          buffer.dispatch(good, u.in.topk_idx, u.in.topk_weights, layout);
      },
      "without its scales; pass an already-quantised x as Fp8Tensor{x, scales}");
  // An Fp8Tensor whose x is not e4m3.
  const comm::Fp8Tensor not_fp8{u.in.x, scales};
  expect_everyone_fails(
      [&] { buffer.dispatch(bad ? not_fp8 : good, u.in.topk_idx, u.in.topk_weights, layout); },
      "x.x is bf16[");
  // Scales of the wrong shape, or none.
  const comm::Fp8Tensor short_scales{q, Tensor::zeros({T, kHidden / 128 - 1}, DType::f32)};
  expect_everyone_fails(
      [&] { buffer.dispatch(bad ? short_scales : good, u.in.topk_idx, u.in.topk_weights, layout); },
      "expected x.scales.dim(1) = hidden / 128 = 2");
  DispatchResult d = buffer.dispatch(good, u.in.topk_idx, u.in.topk_weights, layout);
  const comm::Fp8Tensor no_scales{q, Tensor()};
  expect_everyone_fails([&] { buffer.dispatch(bad ? no_scales : good, d.handle); },
                        "x.scales is undefined");
  expect_still_usable(buffer, u);
}

TEST(BadInput, LayoutOfOtherTopk) {
  Inputs u;
  comm::Buffer buffer(world(), {std::size_t{1} << 20, 30});
  // Another valid routing: drop the first expert of the first token that has one.
  Tensor other = u.in.topk_idx.clone();
  std::int64_t* ids = other.data<std::int64_t>();
  const auto hit = std::find_if(ids, ids + other.numel(), [](std::int64_t e) { return e >= 0; });
  const bool bad = world().rank() == bad_rank();
  // No ASSERT before the collectives below: the bad rank notes it and goes on.
  EXPECT_TRUE(hit != ids + other.numel() || !bad) << "no token with an expert on this rank";
  if (hit != ids + other.numel()) *hit = -1;
  comm::Layout layout = buffer.get_dispatch_layout(bad ? other : u.in.topk_idx, u.s.experts);
  expect_everyone_fails([&] { buffer.dispatch(u.in.x, u.in.topk_idx, u.in.topk_weights, layout); },
                        "layout was not computed from this topk_idx");
  expect_still_usable(buffer, u);
}

TEST(BadInput, HandleFromAnotherBuffer) {
  Inputs u;
  comm::Buffer a(world(), {std::size_t{1} << 20, 30});
  comm::Buffer b(world(), {std::size_t{1} << 20, 30});
  comm::Layout la = a.get_dispatch_layout(u.in.topk_idx, u.s.experts);
  comm::Layout lb = b.get_dispatch_layout(u.in.topk_idx, u.s.experts);
  DispatchResult da = a.dispatch(u.in.x, u.in.topk_idx, u.in.topk_weights, la);
  DispatchResult db = b.dispatch(u.in.x, u.in.topk_idx, u.in.topk_weights, lb);
  const bool bad = world().rank() == bad_rank();
  expect_everyone_fails([&] { a.combine(da.x, bad ? db.handle : da.handle); }, "handle comes from another Buffer");
  expect_everyone_fails([&] { a.dispatch(u.in.x, bad ? db.handle : da.handle); }, "handle comes from another Buffer");
  expect_still_usable(a, u);
}

TEST(BadInput, DeviceTheBuildCannotMove) {
  Inputs u;
  comm::Buffer buffer(world(), {std::size_t{1} << 20, 30});
  comm::Layout layout = buffer.get_dispatch_layout(u.in.topk_idx, u.s.experts);
  Tensor on_gpu = Tensor::wrap(u.in.x.raw(), std::vector<std::int64_t>(u.in.x.shape()), u.in.x.dtype(), Device::cuda);
  const bool bad = world().rank() == bad_rank();
  expect_everyone_fails([&] { buffer.dispatch(bad ? on_gpu : u.in.x, u.in.topk_idx, u.in.topk_weights, layout); },
                        "cuda");
  expect_still_usable(buffer, u);
}

}  // namespace
}  // namespace epx::test
