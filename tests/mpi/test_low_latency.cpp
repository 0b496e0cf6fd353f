// Low-latency dispatch/combine against the single-process reference: counts,
// order, bytes and FP8 scales of every local expert's rows; combine bit-exact
// (f32 products summed in top-k order, rounded once); receive hooks; double
// buffering and the error on a third held result; two micro-batches in
// flight; 100 back-to-back steps with random token counts; bad input giving
// InvalidArgument on every rank with the buffer usable afterwards.
#include <mpi.h>

#include <functional>
#include <random>
#include <string>

#include "low_latency_reference.hpp"

namespace epx::test {
namespace {

using comm::LowLatencyCombineResult;
using comm::LowLatencyDispatchResult;
using comm::LowLatencyOptions;

// ---------------------------------------------------------------- helpers

// Token counts per rank: full, empty, about half, one (repeating), so that
// T = 0 and T = max_tokens_per_rank both occur from 2 ranks on.
std::vector<std::int64_t> mixed_tokens(int max_tokens) {
  std::vector<std::int64_t> t(static_cast<std::size_t>(world().size()));
  for (int r = 0; r < world().size(); ++r) {
    switch (r % 4) {
      case 0: t[r] = max_tokens; break;
      case 1: t[r] = 0; break;
      case 2: t[r] = max_tokens / 2 + 1; break;
      default: t[r] = 1; break;
    }
  }
  return t;
}

std::vector<std::int64_t> same_tokens(std::int64_t n) {
  return std::vector<std::int64_t>(static_cast<std::size_t>(world().size()), n);
}

Shape make_shape(std::vector<std::int64_t> tokens, std::int64_t hidden, int experts_per_rank,
                 int topk, DType dtype, std::uint32_t seed) {
  Shape s;
  s.tokens = std::move(tokens);
  s.hidden = hidden;
  s.experts = experts_for(experts_per_rank);
  s.topk = topk;
  s.dtype = dtype;
  s.seed = seed;
  s.empty_slot = 0.15;
  s.all_empty_every = 5;
  return s;
}

LowLatencyOptions ll_options(bool fp8, bool ue8m0, bool hook) {
  LowLatencyOptions o;
  o.fp8 = fp8;
  o.ue8m0 = ue8m0;
  o.return_recv_hook = hook;
  return o;
}

// With return_recv_hook: the hook is set; call it (twice when `twice`: the
// second call must be harmless). Without: the hook is empty.
void finish(const std::function<void()>& hook, bool want_hook, const std::string& what,
            bool twice = false) {
  if (!want_hook) {
    EXPECT_FALSE(static_cast<bool>(hook)) << what << ": hook set without return_recv_hook";
    return;
  }
  if (!hook) {
    ADD_FAILURE() << what << ": no hook with return_recv_hook (rank " << world().rank() << ")";
    return;
  }
  hook();
  if (twice) hook();
}

bool layout_ok(const LowLatencyDispatchResult& d, const Shape& s, int max_tokens) {
  const int E_local = s.experts / s.ranks();
  return d.x.defined() && d.count.defined() && d.count.dtype() == DType::i32 &&
         d.x.shape() == std::vector<std::int64_t>{E_local, std::int64_t{s.ranks()} * max_tokens, s.hidden} &&
         d.count.numel() == E_local && (d.x.dtype() != DType::e4m3 || d.x_scales.defined());
}

// y for a dispatch result; zeros of the right shape when the result is
// malformed (already reported), so that every rank still makes the combine call.
Tensor y_for(const LowLatencyDispatchResult& d, const Shape& s, int max_tokens, DType ydtype) {
  if (layout_ok(d, s, max_tokens)) return ll::make_y(d, world().rank(), ydtype);
  return Tensor::zeros({s.experts / s.ranks(), std::int64_t{s.ranks()} * max_tokens, s.hidden}, ydtype);
}

struct Round {
  bool fp8 = true;
  bool ue8m0 = false;
  bool hook = false;
  DType ydtype = DType::bf16;
  std::uint32_t salt = 0;
};

// One dispatch + combine on `buffer`, both checked against the reference.
void run_round(comm::Buffer& buffer, const Shape& s, int max_tokens, const Round& r,
               const std::string& what) {
  const int me = world().rank();
  RankInputs in = make_inputs(s, me, r.salt);
  const LowLatencyOptions o = ll_options(r.fp8, r.ue8m0, r.hook);
  LowLatencyDispatchResult d = buffer.low_latency_dispatch(in.x, in.topk_idx, o);
  finish(d.hook, r.hook, what + " dispatch", /*twice=*/true);
  ll::check_dispatch(d, ll::expected_dispatch(s, me, r.fp8, r.ue8m0, r.salt), s, max_tokens,
                     what + " dispatch");
  Tensor y = y_for(d, s, max_tokens, r.ydtype);
  LowLatencyCombineResult c = buffer.low_latency_combine(y, in.topk_idx, in.topk_weights, d.handle, o);
  finish(c.hook, r.hook, what + " combine", /*twice=*/true);
  ll::check_combine(c.x, ll::expected_combine(s, me, r.fp8, r.ue8m0, r.ydtype, r.salt), what + " combine");
}

// Collective: whether any rank has a failure in the current test so far.
bool any_rank_failed() {
  int mine = ::testing::Test::HasFailure() ? 1 : 0, any = 0;
  MPI_Allreduce(&mine, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  return any != 0;
}

// ------------------------------------------------------------ size hint

TEST(LowLatency, SizeHintGrowsWithEveryShape) {
  const int R = world().size();
  const std::size_t base = comm::Buffer::low_latency_size_hint(16, 256, R, 4 * R);
  EXPECT_GT(base, 0u);
  EXPECT_GT(comm::Buffer::low_latency_size_hint(32, 256, R, 4 * R), base);
  EXPECT_GT(comm::Buffer::low_latency_size_hint(16, 512, R, 4 * R), base);
  EXPECT_GT(comm::Buffer::low_latency_size_hint(16, 256, R, 8 * R), base);
  // At least room for one full bf16 receive (x lives in the buffer).
  const std::size_t E_local = 4;
  const std::size_t payload = E_local * static_cast<std::size_t>(R) * 16 * 256 * 2;
  EXPECT_GE(base, payload);
}

// -------------------------------------------------- matches the reference

struct Case {
  const char* name;
  DType xdtype, ydtype;
  std::int64_t hidden;
  int max_tokens;
  int experts_per_rank;
  int topk;
  bool fp8, ue8m0, hook;
  int tokens_rule;  // 0 mixed, 1 all full, 2 all zero, 3 no token has an expert
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

class LowLatencyTest : public ::testing::TestWithParam<Case> {};

TEST_P(LowLatencyTest, MatchesReference) {
  const Case& c = GetParam();
  std::vector<std::int64_t> tokens = c.tokens_rule == 0   ? mixed_tokens(c.max_tokens)
                                     : c.tokens_rule == 2 ? same_tokens(0)
                                                          : same_tokens(c.max_tokens);
  Shape s = make_shape(tokens, c.hidden, c.experts_per_rank, c.topk, c.xdtype, 11);
  if (c.tokens_rule == 3) s.all_empty_every = 1;
  comm::Buffer buffer(world(), ll::buffer_options(c.max_tokens, c.hidden, s.experts));
  Round r;
  r.fp8 = c.fp8;
  r.ue8m0 = c.ue8m0;
  r.hook = c.hook;
  r.ydtype = c.ydtype;
  run_round(buffer, s, c.max_tokens, r, std::string(c.name) + " step 0");
  // Again on the same buffer (the other half of the double buffer), new data.
  r.salt = 7;
  run_round(buffer, s, c.max_tokens, r, std::string(c.name) + " step 1");
  r.salt = 8;
  run_round(buffer, s, c.max_tokens, r, std::string(c.name) + " step 2");
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, LowLatencyTest,
    ::testing::Values(
        Case{"fp8_bf16", DType::bf16, DType::bf16, 256, 16, 3, 4, true, false, false, 0},
        Case{"fp8_f32_ue8m0_hook", DType::f32, DType::f32, 128, 11, 2, 3, true, true, true, 0},
        Case{"fp8_bf16_ue8m0_y_f32", DType::bf16, DType::f32, 384, 8, 4, 6, true, true, false, 0},
        Case{"fp8_f32_y_bf16_full_hook", DType::f32, DType::bf16, 256, 9, 3, 5, true, false, true, 1},
        Case{"bf16_raw_odd_hidden", DType::bf16, DType::bf16, 200, 13, 2, 4, false, false, false, 0},
        Case{"f32_raw_y_bf16_hook", DType::f32, DType::bf16, 160, 24, 2, 2, false, false, true, 1},
        Case{"bf16_raw_y_f32_topk_gt_experts", DType::bf16, DType::f32, 128, 10, 2, 7, false, false, false, 0},
        Case{"no_tokens", DType::bf16, DType::bf16, 128, 8, 2, 4, true, false, false, 2},
        Case{"no_tokens_hook", DType::bf16, DType::f32, 128, 8, 2, 4, false, false, true, 2},
        Case{"no_experts", DType::bf16, DType::bf16, 256, 12, 3, 4, true, false, true, 3}),
    [](const ::testing::TestParamInfo<Case>& i) { return std::string(i.param.name); });

// ------------------------------------------------------ double buffering

// Drops every member of a dispatch result.
void drop(LowLatencyDispatchResult& d) { d = LowLatencyDispatchResult{}; }

int bad_rank() { return world().size() - 1; }
constexpr int kEveryRank = -1;

// Runs `call` on every rank; expects InvalidArgument everywhere. On `bad`
// (or on every rank with kEveryRank) the message contains `needle`; on the
// others it names "rank <bad>".
void expect_everyone_fails(const std::function<void()>& call, int bad, const std::string& needle,
                           const std::string& what) {
  const int me = world().rank();
  try {
    call();
    ADD_FAILURE() << what << ": no error on rank " << me << " (expected InvalidArgument)";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::InvalidArgument) << what << " (rank " << me << "): " << e.what();
    const std::string msg = e.what();
    if (bad == kEveryRank || me == bad) {
      EXPECT_NE(msg.find(needle), std::string::npos) << what << " (rank " << me << "): " << msg;
    } else {
      EXPECT_NE(msg.find("rank " + std::to_string(bad)), std::string::npos)
          << what << " (rank " << me << "): " << msg;
    }
  } catch (const std::exception& e) {
    ADD_FAILURE() << what << " (rank " << me << "): not an epx::Error: " << e.what();
  }
}

TEST(LowLatency, TwoResultsHeldThirdDispatchFails) {
  const int M = 10, me = world().rank();
  Shape s = make_shape(mixed_tokens(M), 256, 2, 4, DType::bf16, 21);
  comm::Buffer buffer(world(), ll::buffer_options(M, s.hidden, s.experts, 30));
  const LowLatencyOptions o;
  RankInputs a = make_inputs(s, me, 1), b = make_inputs(s, me, 2), c = make_inputs(s, me, 3);
  const ll::Expected wa = ll::expected_dispatch(s, me, true, false, 1);
  const ll::Expected wb = ll::expected_dispatch(s, me, true, false, 2);

  LowLatencyDispatchResult da = buffer.low_latency_dispatch(a.x, a.topk_idx, o);
  LowLatencyDispatchResult db = buffer.low_latency_dispatch(b.x, b.topk_idx, o);
  ll::check_dispatch(db, wb, s, M, "second held result");
  ll::check_dispatch(da, wa, s, M, "first held result after the second call");

  // Both held on every rank.
  expect_everyone_fails([&] { buffer.low_latency_dispatch(c.x, c.topk_idx, o); }, kEveryRank, "",
                        "third dispatch, two results held everywhere");
  // Only the last rank still holds both (and of the first only its x).
  if (me == bad_rank()) {
    Tensor keep = da.x;
    drop(da);
    da.x = keep;
  } else {
    drop(da);
  }
  expect_everyone_fails([&] { buffer.low_latency_dispatch(c.x, c.topk_idx, o); }, bad_rank(), "",
                        "third dispatch, two results held on the last rank");
  // The failed calls moved nothing: the held results are intact.
  ll::check_dispatch(db, wb, s, M, "second held result after the failed calls");
  if (me == bad_rank()) {
    const std::size_t row_bytes = static_cast<std::size_t>(s.hidden);
    for (int e = 0; e < s.experts / s.ranks(); ++e) {
      const auto* x = static_cast<const std::uint8_t*>(da.x.raw()) + e * std::int64_t{s.ranks()} * M * row_bytes;
      EXPECT_EQ(std::memcmp(x, wa.x[e].raw(), wa.x[e].nbytes()), 0) << "first held x, expert " << e;
    }
  }
  drop(da);

  // With one result released, the next call works; and combine both.
  LowLatencyDispatchResult dc = buffer.low_latency_dispatch(c.x, c.topk_idx, o);
  ll::check_dispatch(dc, ll::expected_dispatch(s, me, true, false, 3), s, M,
                     "dispatch after release");
  ll::check_dispatch(db, wb, s, M, "second held result after the next call");
  LowLatencyCombineResult cb =
      buffer.low_latency_combine(y_for(db, s, M, DType::bf16), b.topk_idx, b.topk_weights, db.handle, o);
  ll::check_combine(cb.x, ll::expected_combine(s, me, true, false, DType::bf16, 2), "combine of b");
  LowLatencyCombineResult cc =
      buffer.low_latency_combine(y_for(dc, s, M, DType::f32), c.topk_idx, c.topk_weights, dc.handle, o);
  ll::check_combine(cc.x, ll::expected_combine(s, me, true, false, DType::f32, 3), "combine of c");

  // Holding only `count` of a result still holds it.
  if (me == bad_rank()) {
    Tensor keep = db.count;
    drop(db);
    db.count = keep;
  } else {
    drop(db);
  }
  expect_everyone_fails([&] { buffer.low_latency_dispatch(a.x, a.topk_idx, o); }, bad_rank(), "",
                        "third dispatch, count of a result held on the last rank");
  drop(db);
  LowLatencyDispatchResult dd = buffer.low_latency_dispatch(a.x, a.topk_idx, o);
  ll::check_dispatch(dd, wa, s, M, "dispatch after releasing count");
  ll::check_dispatch(dc, ll::expected_dispatch(s, me, true, false, 3), s, M,
                     "held result after the next call");
}

// Two results held; releasing the newer one (keeping the older) frees room
// for the next call just as well, and the older result stays intact.
TEST(LowLatency, ReleasingTheNewerResultFreesRoom) {
  const int M = 8, me = world().rank();
  Shape s = make_shape(mixed_tokens(M), 128, 2, 3, DType::bf16, 22);
  comm::Buffer buffer(world(), ll::buffer_options(M, s.hidden, s.experts, 30));
  const LowLatencyOptions o;
  RankInputs a = make_inputs(s, me, 1), b = make_inputs(s, me, 2), c = make_inputs(s, me, 3);
  const ll::Expected wa = ll::expected_dispatch(s, me, true, false, 1);
  LowLatencyDispatchResult da = buffer.low_latency_dispatch(a.x, a.topk_idx, o);
  LowLatencyDispatchResult db = buffer.low_latency_dispatch(b.x, b.topk_idx, o);
  ll::check_dispatch(db, ll::expected_dispatch(s, me, true, false, 2), s, M, "newer result");
  drop(db);
  LowLatencyDispatchResult dc;
  try {
    dc = buffer.low_latency_dispatch(c.x, c.topk_idx, o);
  } catch (const Error& e) {
    ADD_FAILURE() << "dispatch with only the older result held (rank " << me << "): " << e.what();
  }
  if (dc.x.defined())
    ll::check_dispatch(dc, ll::expected_dispatch(s, me, true, false, 3), s, M,
                       "dispatch after releasing the newer result");
  ll::check_dispatch(da, wa, s, M, "older held result after the next call");
}

// ---------------------------------------------- micro-batches with hooks

// Stand-in for attention: some local work between sends and hooks.
float compute(int n) {
  volatile float acc = 0;
  for (int i = 0; i < n; ++i) acc = acc + static_cast<float>(i % 7) * 0.5f;
  return acc;
}

TEST(LowLatency, TwoMicroBatchesWithHooks) {
  const int M = 14, me = world().rank();
  // Two micro-batches of different token counts per rank.
  std::vector<std::int64_t> ta = mixed_tokens(M), tb(ta.size());
  for (std::size_t r = 0; r < tb.size(); ++r) tb[r] = (ta[r] + 5) % (M + 1);
  Shape sa = make_shape(ta, 256, 3, 4, DType::bf16, 31);
  Shape sb = make_shape(tb, 256, 3, 4, DType::bf16, 32);
  comm::Buffer buffer(world(), ll::buffer_options(M, 256, sa.experts));
  const LowLatencyOptions o = ll_options(true, false, true);
  RankInputs a = make_inputs(sa, me, 0), b = make_inputs(sb, me, 0);

  LowLatencyDispatchResult da = buffer.low_latency_dispatch(a.x, a.topk_idx, o);
  compute(20000);
  LowLatencyDispatchResult db = buffer.low_latency_dispatch(b.x, b.topk_idx, o);
  const ll::Expected wa = ll::expected_dispatch(sa, me, true, false, 0);  // "compute"
  finish(da.hook, true, "dispatch a");
  ll::check_dispatch(da, wa, sa, M, "dispatch a");
  LowLatencyCombineResult ca =
      buffer.low_latency_combine(y_for(da, sa, M, DType::bf16), a.topk_idx, a.topk_weights, da.handle, o);
  const ll::Expected wb = ll::expected_dispatch(sb, me, true, false, 0);  // "compute"
  finish(db.hook, true, "dispatch b");
  ll::check_dispatch(db, wb, sb, M, "dispatch b");
  LowLatencyCombineResult cb =
      buffer.low_latency_combine(y_for(db, sb, M, DType::f32), b.topk_idx, b.topk_weights, db.handle, o);
  compute(20000);
  finish(ca.hook, true, "combine a");
  ll::check_combine(ca.x, ll::expected_combine(sa, me, true, false, DType::bf16, 0), "combine a");
  ll::check_dispatch(db, wb, sb, M, "dispatch b after combine a");

  // Next step of micro-batch a while b's combine is in flight.
  drop(da);
  ca = {};
  RankInputs a2 = make_inputs(sa, me, 5);
  LowLatencyDispatchResult da2 = buffer.low_latency_dispatch(a2.x, a2.topk_idx, o);
  compute(20000);
  finish(cb.hook, true, "combine b");
  ll::check_combine(cb.x, ll::expected_combine(sb, me, true, false, DType::f32, 0), "combine b");
  finish(da2.hook, true, "dispatch a2");
  ll::check_dispatch(da2, ll::expected_dispatch(sa, me, true, false, 5), sa, M, "dispatch a2");
  LowLatencyCombineResult ca2 = buffer.low_latency_combine(y_for(da2, sa, M, DType::bf16), a2.topk_idx,
                                                           a2.topk_weights, da2.handle, o);
  finish(ca2.hook, true, "combine a2");
  ll::check_combine(ca2.x, ll::expected_combine(sa, me, true, false, DType::bf16, 5), "combine a2");
  ll::check_dispatch(db, wb, sb, M, "dispatch b at the end");
}

// Hooks need not be called in the order of the calls, nor combines made in
// the order of the dispatches.
TEST(LowLatency, HooksInReverseOrder) {
  const int M = 9, me = world().rank();
  Shape s = make_shape(mixed_tokens(M), 128, 2, 3, DType::f32, 41);
  comm::Buffer buffer(world(), ll::buffer_options(M, 128, s.experts));
  const LowLatencyOptions o = ll_options(false, false, true);
  RankInputs a = make_inputs(s, me, 1), b = make_inputs(s, me, 2);
  LowLatencyDispatchResult da = buffer.low_latency_dispatch(a.x, a.topk_idx, o);
  LowLatencyDispatchResult db = buffer.low_latency_dispatch(b.x, b.topk_idx, o);
  finish(db.hook, true, "dispatch b");
  finish(da.hook, true, "dispatch a");
  ll::check_dispatch(da, ll::expected_dispatch(s, me, false, false, 1), s, M, "dispatch a");
  ll::check_dispatch(db, ll::expected_dispatch(s, me, false, false, 2), s, M, "dispatch b");
  // Combine in the other order too.
  LowLatencyCombineResult cb =
      buffer.low_latency_combine(y_for(db, s, M, DType::bf16), b.topk_idx, b.topk_weights, db.handle, o);
  LowLatencyCombineResult ca =
      buffer.low_latency_combine(y_for(da, s, M, DType::f32), a.topk_idx, a.topk_weights, da.handle, o);
  finish(cb.hook, true, "combine b");
  finish(ca.hook, true, "combine a");
  ll::check_combine(ca.x, ll::expected_combine(s, me, false, false, DType::f32, 1), "combine a");
  ll::check_combine(cb.x, ll::expected_combine(s, me, false, false, DType::bf16, 2), "combine b");
}

// Results dropped without their hook ever being called: the buffer goes on.
TEST(LowLatency, ResultsDroppedBeforeTheirHook) {
  const int M = 10, me = world().rank();
  Shape s = make_shape(mixed_tokens(M), 256, 2, 4, DType::bf16, 61);
  comm::Buffer buffer(world(), ll::buffer_options(M, 256, s.experts));
  const LowLatencyOptions hooked = ll_options(true, false, true);
  for (int i = 0; i < 3; ++i) {
    RankInputs in = make_inputs(s, me, 10u + static_cast<std::uint32_t>(i));
    LowLatencyDispatchResult d = buffer.low_latency_dispatch(in.x, in.topk_idx, hooked);
  }
  Round r;
  r.salt = 20;
  run_round(buffer, s, M, r, "after dispatches dropped before their hook");
  for (int i = 0; i < 3; ++i) {
    RankInputs in = make_inputs(s, me, 30u + static_cast<std::uint32_t>(i));
    LowLatencyDispatchResult d = buffer.low_latency_dispatch(in.x, in.topk_idx, hooked);
    finish(d.hook, true, "dispatch before a dropped combine");
    LowLatencyCombineResult c = buffer.low_latency_combine(y_for(d, s, M, DType::bf16), in.topk_idx,
                                                           in.topk_weights, d.handle, hooked);
  }
  r.salt = 40;
  r.hook = true;
  run_round(buffer, s, M, r, "after combines dropped before their hook");
  r.salt = 41;
  r.hook = false;
  r.fp8 = false;
  run_round(buffer, s, M, r, "after combines dropped before their hook, no fp8");
}

// Every token to every expert on every rank: each expert's R * M rows full.
TEST(LowLatency, EveryTokenToEveryExpert) {
  const int M = 8, R = world().size();
  Shape s = make_shape(same_tokens(M), 128, 2, 2 * R, DType::bf16, 71);
  s.empty_slot = 0;
  s.all_empty_every = 0;
  comm::Buffer buffer(world(), ll::buffer_options(M, 128, s.experts));
  Round r;
  r.hook = true;
  r.ydtype = DType::f32;
  run_round(buffer, s, M, r, "full fp8");
  r.fp8 = false;
  r.hook = false;
  r.salt = 1;
  run_round(buffer, s, M, r, "full bf16");
  const ll::Expected want = ll::expected_dispatch(s, world().rank(), false, false, 1);
  for (int c : want.count) EXPECT_EQ(c, R * M);  // the reference itself fills every slot
}

// Combine results are the caller's: many may be kept, none is overwritten.
TEST(LowLatency, CombineResultsKeptAcrossCalls) {
  const int M = 9, me = world().rank();
  Shape s = make_shape(mixed_tokens(M), 128, 3, 3, DType::f32, 81);
  comm::Buffer buffer(world(), ll::buffer_options(M, 128, s.experts));
  const LowLatencyOptions o = ll_options(true, true, false);
  std::vector<Tensor> kept;
  for (std::uint32_t i = 0; i < 4; ++i) {
    RankInputs in = make_inputs(s, me, i);
    LowLatencyDispatchResult d = buffer.low_latency_dispatch(in.x, in.topk_idx, o);
    kept.push_back(
        buffer.low_latency_combine(y_for(d, s, M, DType::f32), in.topk_idx, in.topk_weights, d.handle, o).x);
  }
  for (std::uint32_t i = 0; i < 4; ++i)
    ll::check_combine(kept[i], ll::expected_combine(s, me, true, true, DType::f32, i),
                      "kept combine result " + std::to_string(i));
}

// ------------------------------------------------- back-to-back steps

TEST(LowLatency, HundredStepsRandomTokens) {
  const int M = 16, me = world().rank(), R = world().size();
  const std::int64_t H = 128;
  comm::Buffer buffer(world(), ll::buffer_options(M, H, experts_for(3)));
  // The previous step's dispatch stays held through the next step and must
  // stay intact (double buffering, no silent overwrite).
  LowLatencyDispatchResult prev;
  ll::Expected prev_want;
  Shape prev_shape;
  for (int step = 0; step < 100; ++step) {
    std::mt19937 rng(9000u + static_cast<std::uint32_t>(step));  // same on every rank
    std::vector<std::int64_t> tokens(static_cast<std::size_t>(R));
    for (auto& t : tokens) t = std::uniform_int_distribution<int>(0, M)(rng);
    if (step % 10 == 3) tokens.assign(tokens.size(), 0);
    if (step % 10 == 7) tokens.assign(tokens.size(), M);
    Shape s = make_shape(tokens, H, 3, 4, step % 6 < 3 ? DType::bf16 : DType::f32,
                         100u + static_cast<std::uint32_t>(step));
    Round r;
    r.fp8 = step % 2 == 0;
    r.ue8m0 = step % 4 == 0;
    r.hook = step % 3 == 0;
    r.ydtype = step % 5 == 0 ? DType::f32 : DType::bf16;
    r.salt = static_cast<std::uint32_t>(step);
    const std::string what = "step " + std::to_string(step);

    RankInputs in = make_inputs(s, me, r.salt);
    const LowLatencyOptions o = ll_options(r.fp8, r.ue8m0, r.hook);
    LowLatencyDispatchResult d = buffer.low_latency_dispatch(in.x, in.topk_idx, o);
    finish(d.hook, r.hook, what + " dispatch");
    const ll::Expected want = ll::expected_dispatch(s, me, r.fp8, r.ue8m0, r.salt);
    ll::check_dispatch(d, want, s, M, what + " dispatch");
    LowLatencyCombineResult c =
        buffer.low_latency_combine(y_for(d, s, M, r.ydtype), in.topk_idx, in.topk_weights, d.handle, o);
    finish(c.hook, r.hook, what + " combine");
    ll::check_combine(c.x, ll::expected_combine(s, me, r.fp8, r.ue8m0, r.ydtype, r.salt), what + " combine");
    if (step > 0)
      ll::check_dispatch(prev, prev_want, prev_shape, M, what + ": previous step's dispatch");
    prev = std::move(d);
    prev_want = want;
    prev_shape = s;
    if (any_rank_failed()) {
      ADD_FAILURE() << "stopping at " << what << " (rank " << me << ")";
      break;
    }
  }
}

// --------------------------------------------------------- bad input

struct BadSetup {
  static constexpr int M = 12;
  static constexpr std::int64_t H = 256;
  Shape s;
  RankInputs in;
  BadSetup() {
    std::vector<std::int64_t> t(static_cast<std::size_t>(world().size()));
    for (int r = 0; r < world().size(); ++r) t[r] = M - r % 3;  // every rank has tokens
    s = make_shape(t, H, 2, 4, DType::bf16, 51);
    s.all_empty_every = 0;  // token 0 has experts on every rank
    s.empty_slot = 0.0;
    in = make_inputs(s, world().rank());
  }
  comm::BufferOptions options() const { return ll::buffer_options(M, H, s.experts, 30); }
};

void expect_still_usable(comm::Buffer& buffer, const BadSetup& u, const std::string& what) {
  Round r;
  r.salt = 77;
  run_round(buffer, u.s, BadSetup::M, r, what + ": good call afterwards");
  r.fp8 = false;
  r.hook = true;
  r.salt = 78;
  run_round(buffer, u.s, BadSetup::M, r, what + ": second good call afterwards");
}

TEST(LowLatencyBadInput, MoreTokensThanMaxTokensPerRank) {
  BadSetup u;
  comm::Buffer buffer(world(), u.options());
  Shape big = u.s;
  big.tokens[bad_rank()] = BadSetup::M + 1;
  RankInputs in = make_inputs(big, world().rank());
  expect_everyone_fails([&] { buffer.low_latency_dispatch(in.x, in.topk_idx); }, bad_rank(),
                        "max_tokens_per_rank", "T > max_tokens_per_rank");
  expect_still_usable(buffer, u, "T > max_tokens_per_rank");
}

TEST(LowLatencyBadInput, HiddenDiffersFromBuffer) {
  BadSetup u;
  comm::Buffer buffer(world(), u.options());
  Shape wide = u.s;
  wide.hidden = BadSetup::H + 128;
  RankInputs in = world().rank() == bad_rank() ? make_inputs(wide, world().rank()) : u.in;
  expect_everyone_fails([&] { buffer.low_latency_dispatch(in.x, in.topk_idx); }, bad_rank(), "hidden",
                        "x hidden != options.hidden");
  expect_still_usable(buffer, u, "x hidden != options.hidden");
}

TEST(LowLatencyBadInput, Fp8NeedsHiddenMultipleOf128) {
  BadSetup u;
  Shape s = u.s;
  s.hidden = 96;
  RankInputs in = make_inputs(s, world().rank());
  comm::Buffer buffer(world(), ll::buffer_options(BadSetup::M, 96, s.experts, 30));
  expect_everyone_fails([&] { buffer.low_latency_dispatch(in.x, in.topk_idx); }, kEveryRank, "128",
                        "fp8 with hidden 96");
  // Without fp8 hidden 96 is fine, and the buffer still works.
  Round r;
  r.fp8 = false;
  run_round(buffer, s, BadSetup::M, r, "hidden 96 without fp8");
  r.hook = true;
  r.ydtype = DType::f32;
  r.salt = 3;
  run_round(buffer, s, BadSetup::M, r, "hidden 96 without fp8, hook");
}

TEST(LowLatencyBadInput, ExpertIdOutOfRange) {
  BadSetup u;
  comm::Buffer buffer(world(), u.options());
  const bool bad = world().rank() == bad_rank();
  Tensor idx = u.in.topk_idx.clone();
  if (bad) idx.data<std::int64_t>()[1] = u.s.experts;
  expect_everyone_fails([&] { buffer.low_latency_dispatch(u.in.x, idx); }, bad_rank(),
                        std::to_string(u.s.experts), "expert id = num_experts");
  if (bad) idx.data<std::int64_t>()[1] = -2;
  expect_everyone_fails([&] { buffer.low_latency_dispatch(u.in.x, idx); }, bad_rank(), "-2",
                        "expert id = -2");
  expect_still_usable(buffer, u, "expert id out of range");
}

TEST(LowLatencyBadInput, RepeatedExpertInOneToken) {
  BadSetup u;
  comm::Buffer buffer(world(), u.options());
  Tensor idx = u.in.topk_idx.clone();
  if (world().rank() == bad_rank()) {
    idx.data<std::int64_t>()[2 * 4 + 0] = 1;
    idx.data<std::int64_t>()[2 * 4 + 3] = 1;
  }
  expect_everyone_fails([&] { buffer.low_latency_dispatch(u.in.x, idx); }, bad_rank(), "repeat",
                        "repeated expert");
  expect_still_usable(buffer, u, "repeated expert");
}

TEST(LowLatencyBadInput, HandleFromAnotherBuffer) {
  BadSetup u;
  const int me = world().rank();
  comm::Buffer a(world(), u.options());
  comm::Buffer b(world(), u.options());
  LowLatencyDispatchResult da = a.low_latency_dispatch(u.in.x, u.in.topk_idx);
  LowLatencyDispatchResult db = b.low_latency_dispatch(u.in.x, u.in.topk_idx);
  Tensor y = y_for(da, u.s, BadSetup::M, DType::bf16);
  const bool bad = me == bad_rank();
  expect_everyone_fails(
      [&] { a.low_latency_combine(y, u.in.topk_idx, u.in.topk_weights, bad ? db.handle : da.handle); },
      bad_rank(), "handle", "handle from another buffer");
  // The right handle still works.
  LowLatencyCombineResult c = a.low_latency_combine(y, u.in.topk_idx, u.in.topk_weights, da.handle);
  ll::check_combine(c.x, ll::expected_combine(u.s, me, true, false, DType::bf16, 0),
                    "combine with the right handle");
  drop(da);
  drop(db);
  expect_still_usable(a, u, "handle from another buffer");
}

// The handle of another dispatch on the same buffer (other routing).
TEST(LowLatencyBadInput, HandleFromAnotherCall) {
  BadSetup u;
  const int me = world().rank();
  Shape other = u.s;
  other.seed = 52;  // another routing, same token counts
  RankInputs b = make_inputs(other, me, 0);
  comm::Buffer buffer(world(), u.options());
  LowLatencyDispatchResult da = buffer.low_latency_dispatch(u.in.x, u.in.topk_idx);
  LowLatencyDispatchResult db = buffer.low_latency_dispatch(b.x, b.topk_idx);
  Tensor ya = y_for(da, u.s, BadSetup::M, DType::bf16);
  const bool bad = me == bad_rank();
  expect_everyone_fails(
      [&] { buffer.low_latency_combine(ya, u.in.topk_idx, u.in.topk_weights, bad ? db.handle : da.handle); },
      bad_rank(), "", "handle from another call");
  LowLatencyCombineResult ca = buffer.low_latency_combine(ya, u.in.topk_idx, u.in.topk_weights, da.handle);
  ll::check_combine(ca.x, ll::expected_combine(u.s, me, true, false, DType::bf16, 0), "combine a");
  LowLatencyCombineResult cb = buffer.low_latency_combine(y_for(db, other, BadSetup::M, DType::f32),
                                                          b.topk_idx, b.topk_weights, db.handle);
  ll::check_combine(cb.x, ll::expected_combine(other, me, true, false, DType::f32, 0), "combine b");
  drop(da);
  drop(db);
  expect_still_usable(buffer, u, "handle from another call");
}

TEST(LowLatencyBadInput, CombineInputOfWrongShape) {
  BadSetup u;
  const int me = world().rank(), R = world().size(), E_local = u.s.experts / R;
  comm::Buffer buffer(world(), u.options());
  LowLatencyDispatchResult d = buffer.low_latency_dispatch(u.in.x, u.in.topk_idx);
  Tensor y = y_for(d, u.s, BadSetup::M, DType::bf16);
  const bool bad = me == bad_rank();
  Tensor wide = Tensor::zeros({E_local, std::int64_t{R} * BadSetup::M, BadSetup::H + 128}, DType::bf16);
  Tensor short_rows = Tensor::zeros({E_local, std::int64_t{R} * BadSetup::M - 1, BadSetup::H}, DType::bf16);
  expect_everyone_fails(
      [&] { buffer.low_latency_combine(bad ? wide : y, u.in.topk_idx, u.in.topk_weights, d.handle); },
      bad_rank(), "y", "y with the wrong hidden");
  expect_everyone_fails(
      [&] { buffer.low_latency_combine(bad ? short_rows : y, u.in.topk_idx, u.in.topk_weights, d.handle); },
      bad_rank(), "y", "y with too few rows");
  // The e4m3 dispatch output itself is no valid y (bf16 or f32 only).
  expect_everyone_fails(
      [&] { buffer.low_latency_combine(bad ? d.x : y, u.in.topk_idx, u.in.topk_weights, d.handle); },
      bad_rank(), "y", "y of dtype e4m3");
  LowLatencyCombineResult c = buffer.low_latency_combine(y, u.in.topk_idx, u.in.topk_weights, d.handle);
  ll::check_combine(c.x, ll::expected_combine(u.s, me, true, false, DType::bf16, 0),
                    "combine with the right y");
  drop(d);
  expect_still_usable(buffer, u, "y of the wrong shape");
}

TEST(LowLatencyBadInput, BufferWithoutLowLatency) {
  BadSetup u;
  comm::Buffer buffer(world(), {std::size_t{1} << 16, 30});
  expect_everyone_fails([&] { buffer.low_latency_dispatch(u.in.x, u.in.topk_idx); }, kEveryRank,
                        "low_latency", "low_latency_dispatch on a normal Buffer");
  // Normal mode still works on it.
  comm::Layout layout = buffer.get_dispatch_layout(u.in.topk_idx, u.s.experts);
  DispatchResult d = buffer.dispatch(u.in.x, u.in.topk_idx, u.in.topk_weights, layout);
  EXPECT_EQ(d.x.dim(0), expected_dispatch(u.s, world().rank(), false, false, 1).rows());
}

// Ranks passing different shapes to the constructor: InvalidArgument on
// every rank from the constructor; a good Buffer works afterwards.
TEST(LowLatencyBadInput, RanksDisagreeOnBufferShape) {
  if (world().size() == 1) GTEST_SKIP() << "needs two ranks";
  BadSetup u;
  const bool bad = world().rank() == bad_rank();
  auto expect_ctor_fails = [&](comm::BufferOptions o, const std::string& needle) {
    try {
      comm::Buffer buffer(world(), o);
      ADD_FAILURE() << needle << " differs: no error on rank " << world().rank();
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::InvalidArgument) << e.what();
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    } catch (const std::exception& e) {
      ADD_FAILURE() << "not an epx::Error: " << e.what();
    }
  };
  comm::BufferOptions o = u.options();
  o.max_tokens_per_rank = bad ? BadSetup::M + 4 : BadSetup::M;
  expect_ctor_fails(o, "max_tokens_per_rank");
  o = u.options();
  o.hidden = bad ? static_cast<int>(BadSetup::H + 128) : static_cast<int>(BadSetup::H);
  expect_ctor_fails(o, "hidden");
  o = u.options();
  o.num_experts = bad ? u.s.experts + world().size() : u.s.experts;
  expect_ctor_fails(o, "num_experts");
  comm::Buffer buffer(world(), u.options());
  expect_still_usable(buffer, u, "after failed constructors");
}

}  // namespace
}  // namespace epx::test
