// A peer that passes migrate_experts' checks but never sends: its receiver
// times out within the bound, naming that peer, the expert and the layer,
// and aborts the group. The lost sends are simulated with the MPI profiling
// interface: this executable's MPI_Isend drops migration messages (tag
// "mg", balancer/migrate.cpp) on the chosen rank, and passes the rest on.
#include <gtest/gtest.h>
#include <mpi.h>

#include <atomic>
#include <epx/epx.hpp>

namespace {

std::atomic<bool> g_drop_migration_sends{false};
constexpr int kMigrationTag = 0x6d67;

}  // namespace

extern "C" int MPI_Isend(const void* buf, int count, MPI_Datatype type, int dest, int tag,
                         MPI_Comm comm, MPI_Request* request) {
  if (g_drop_migration_sends && tag == kMigrationTag) {
    *request = MPI_REQUEST_NULL;  // "sent": the peer waits for nothing
    return MPI_SUCCESS;
  }
  return PMPI_Isend(buf, count, type, dest, tag, comm, request);
}

namespace epx::balancer {
namespace {

TEST(MigrateTimeout, SilentPeerIsNamed) {
  int world_size = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &world_size);
  if (world_size < 2) GTEST_SKIP() << "needs a peer";
  // A group of its own: the abort must not poison other tests.
  Group g(MPI_COMM_WORLD);
  const int R = g.size(), me = g.rank(), S = 2, E = 2 * R;
  // current: GPU r holds experts 2r, 2r+1; target: GPU r holds GPU r+1's, so
  // rank r receives both from rank r+1 (mod R), and rank 0 from rank 1.
  auto placement = [&](int shift) {
    Placement p;
    p.phy2log = Tensor::empty({1, R * S}, DType::i64);
    for (int r = 0; r < R; ++r)
      for (int i = 0; i < S; ++i)
        p.phy2log.data<std::int64_t>()[r * S + i] = ((r + shift) % R) * S + i;
    p.logcnt = Tensor::empty({1, E}, DType::i64);
    for (int e = 0; e < E; ++e) p.logcnt.data<std::int64_t>()[e] = 1;
    p.log2phy = Tensor::empty({1, E, 1}, DType::i64);  // not read by migration
    return p;
  };
  const Placement current = placement(0), target = placement(1);
  std::vector<std::vector<SlotTensors>> w(1);
  for (int i = 0; i < S; ++i) w[0].push_back({Tensor::zeros({64}, DType::f32)});
  const int silent = 1;
  g_drop_migration_sends = me == silent;
  try {
    migrate_experts(g, current, target, std::move(w), 2.0);
    // Only ranks whose sender is not silent may finish.
    EXPECT_NE((me + 1) % R, silent) << "rank " << me << " got its experts from a silent peer";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_EQ((me + 1) % R, silent) << what;
    EXPECT_EQ(e.code(), ErrorCode::Timeout) << what;
    EXPECT_NE(what.find("receiving expert"), std::string::npos) << what;
    EXPECT_NE(what.find("from rank " + std::to_string(silent)), std::string::npos) << what;
    EXPECT_TRUE(g.aborted());
  }
  g_drop_migration_sends = false;
  MPI_Barrier(MPI_COMM_WORLD);
}

}  // namespace
}  // namespace epx::balancer
