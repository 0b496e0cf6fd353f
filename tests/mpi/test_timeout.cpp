// A rank that does not make the call: the others time out with an error that
// names the waiting phase and the missing rank, and the group is poisoned so
// every later call fails fast instead of waiting again.
#include <chrono>

#include "comm_fixture.hpp"

namespace epx::test {
namespace {

TEST(Timeout, MissingRankIsNamed) {
  if (world().size() < 2) GTEST_SKIP() << "needs two ranks";
  // A group of its own: the abort must not poison world() for other tests.
  Group g(MPI_COMM_WORLD);
  Shape s;
  s.tokens.assign(static_cast<std::size_t>(g.size()), 8);
  s.experts = 2 * g.size();
  RankInputs in = make_inputs(s, g.rank());
  comm::Buffer buffer(g, {std::size_t{1} << 16, 1.0});
  const int absent = g.size() - 1;
  if (g.rank() != absent) {
    try {
      buffer.get_dispatch_layout(in.topk_idx, s.experts);
      ADD_FAILURE() << "no timeout";
    } catch (const Error& e) {
      // Timed out itself, or told by a rank that did; either way the reason is named.
      EXPECT_TRUE(e.code() == ErrorCode::Timeout || e.code() == ErrorCode::PeerFailure) << e.what();
      EXPECT_TRUE(e.poisoned()) << e.what();
      EXPECT_NE(std::string(e.what()).find("rank " + std::to_string(absent)), std::string::npos)
          << e.what();
      EXPECT_NE(std::string(e.what()).find("get_dispatch_layout"), std::string::npos) << e.what();
    }
  }
  MPI_Barrier(MPI_COMM_WORLD);
  // Every rank, the absent one included, now fails fast: PeerFailure comes
  // from the abort mark, before any wait (a wait would end in Timeout).
  try {
    buffer.get_dispatch_layout(in.topk_idx, s.experts);
    ADD_FAILURE() << "no error after the group was aborted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::PeerFailure) << e.what();
  }
  EXPECT_TRUE(g.aborted());
}

// The others' error names the call and the absent rank (they timed out
// waiting for it, or were told by a rank that did).
void expect_names(const Error& e, int absent, const char* call) {
  EXPECT_TRUE(e.code() == ErrorCode::Timeout || e.code() == ErrorCode::PeerFailure) << e.what();
  EXPECT_NE(std::string(e.what()).find("rank " + std::to_string(absent)), std::string::npos) << e.what();
  EXPECT_NE(std::string(e.what()).find(call), std::string::npos) << e.what();
}

// One rank skips the dispatch (it computed its layout with the others), then
// one skips the combine: within the timeout every other rank fails, naming
// it, on every node shape (inter-node waits included); nothing hangs after.
TEST(Timeout, RankSkippingDispatchOrCombineIsNamed) {
  if (world().size() < 2) GTEST_SKIP() << "needs two ranks";
  for (const char* call : {"dispatch", "combine"}) {
    Group g(MPI_COMM_WORLD);
    {
      Shape s;
      s.tokens.assign(static_cast<std::size_t>(g.size()), 12);
      s.experts = 2 * g.size();
      RankInputs in = make_inputs(s, g.rank());
      comm::Buffer buffer(g, {std::size_t{1} << 16, 1.0});
      const int absent = std::string(call) == "dispatch" ? 0 : g.size() - 1;
      comm::Layout layout = buffer.get_dispatch_layout(in.topk_idx, s.experts);
      const bool skip_dispatch = std::string(call) == "dispatch" && g.rank() == absent;
      const auto start = std::chrono::steady_clock::now();
      try {
        if (!skip_dispatch) {
          DispatchResult d = buffer.dispatch(in.x, in.topk_idx, in.topk_weights, layout);
          if (g.rank() != absent) {
            buffer.combine(kernels::cast(kernels::cast(d.x, DType::f32), DType::bf16), d.handle);
            ADD_FAILURE() << "no error in " << call;
          }
        }
      } catch (const Error& e) {
        expect_names(e, absent, call);
        EXPECT_TRUE(e.poisoned()) << e.what();
        const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        EXPECT_LT(waited, 30.0) << "took " << waited << " s for a 1 s timeout";
      }
      MPI_Barrier(MPI_COMM_WORLD);
    }  // the Buffer goes: no hang (its windows are leaked where freeing is collective)
    // The ranks that waited marked the group failed; the one that skipped
    // learns of it at its next wait on the group, or while freeing windows.
    const int absent = std::string(call) == "dispatch" ? 0 : g.size() - 1;
    if (g.rank() != absent) {
      EXPECT_TRUE(g.aborted()) << call;
    }
  }
}

// Ranks in different calls (rank 0 asks for a layout while the others
// dispatch) cannot agree on anything: every rank gets an error that says
// the buffer is poisoned, whatever its code, and the group is aborted.
TEST(Drift, RanksInDifferentCallsGetPoisonedErrors) {
  if (world().size() < 2) GTEST_SKIP() << "needs two ranks";
  Group g(MPI_COMM_WORLD);
  {
    Shape s;
    s.tokens.assign(static_cast<std::size_t>(g.size()), 12);
    s.experts = 2 * g.size();
    RankInputs in = make_inputs(s, g.rank());
    comm::Buffer buffer(g, {std::size_t{1} << 16, 5.0});
    comm::Layout layout = buffer.get_dispatch_layout(in.topk_idx, s.experts);
    // Every rank leaves the first call before any starts the second: a rank
    // still finishing it (growing its arena, say) would otherwise meet the
    // others' abort there, outside the try, and skip the barrier below.
    MPI_Barrier(MPI_COMM_WORLD);
    try {
      if (g.rank() == 0)
        buffer.get_dispatch_layout(in.topk_idx, s.experts);
      else
        buffer.dispatch(in.x, in.topk_idx, in.topk_weights, layout);
      ADD_FAILURE() << "no error although rank 0 asked for a layout while the others dispatched";
    } catch (const Error& e) {
      EXPECT_TRUE(e.poisoned()) << to_string(e.code()) << ": " << e.what();
    }
    MPI_Barrier(MPI_COMM_WORLD);
  }
  EXPECT_TRUE(g.aborted());
}

}  // namespace
}  // namespace epx::test
