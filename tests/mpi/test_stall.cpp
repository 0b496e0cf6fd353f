// A rank that stops calling MPI (a long compute, a debugger) for three times
// the timeout: every other rank fails within the timeout plus a little,
// naming that rank and the phase, on every transport (the mpi one's signal
// included, which once sat in MPI_Accumulate until the sleeper came back).
#include <unistd.h>

#include <chrono>
#include <thread>

#include "comm_fixture.hpp"

namespace epx::test {
namespace {

constexpr double kTimeoutS = 3.0;
constexpr double kStallS = 9.0;
// What "a little" may be on a loaded machine: time to notice, to abort the
// group, and for the ranks told by the first to time out.
constexpr double kSlackS = 3.0;

TEST(Stall, RankOutsideMpiForThreeTimeoutsIsNamedWithinTheTimeout) {
  if (world().size() < 2) GTEST_SKIP() << "needs two ranks";
  Group g(MPI_COMM_WORLD);
  const int absent = g.size() - 1;
  Shape s;
  s.tokens.assign(static_cast<std::size_t>(g.size()), 64);
  s.hidden = 512;
  s.experts = 2 * g.size();
  RankInputs in = make_inputs(s, g.rank());
  {
    comm::Buffer buffer(g, {std::size_t{1} << 22, kTimeoutS});
    comm::Layout layout = buffer.get_dispatch_layout(in.topk_idx, s.experts);
    const auto start = std::chrono::steady_clock::now();
    if (g.rank() == absent) {
      // Outside MPI altogether: no progress of any kind from this rank.
      std::this_thread::sleep_for(std::chrono::duration<double>(kStallS));
    } else {
      try {
        buffer.dispatch(in.x, in.topk_idx, in.topk_weights, layout);
        ADD_FAILURE() << "no error";
      } catch (const Error& e) {
        const double waited =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        EXPECT_TRUE(e.code() == ErrorCode::Timeout || e.code() == ErrorCode::PeerFailure)
            << e.what();
        const std::string msg = e.what();
        EXPECT_NE(msg.find("rank " + std::to_string(absent)), std::string::npos) << msg;
        EXPECT_NE(msg.find("dispatch"), std::string::npos) << msg;
        EXPECT_LT(waited, kTimeoutS + kSlackS) << "failed after " << waited << " s: " << msg;
        EXPECT_LT(waited, kStallS) << "waited for the stalled rank: " << msg;
      }
    }
  }  // the Buffer goes without a hang (its windows are leaked: the group failed)
  MPI_Barrier(MPI_COMM_WORLD);
}

}  // namespace
}  // namespace epx::test
