// The transport between nodes, seen through the Fabric: puts of random bytes
// of every size class (UCX's immediate path, its copies, pieces larger than
// any socket buffer) land where they were put, a signal is never seen before
// the puts issued before it, and signals to one slot arrive in order.
// Whichever backend EPX_INTERNODE_TRANSPORT chooses (ucx, rma or msg).
#include <mpi.h>

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

#include <epx/epx.hpp>

#include "comm/transport/fabric.hpp"

namespace epx::test {
namespace {

constexpr double kTimeoutS = 60.0;
// Sizes of the pieces each rank puts into each remote peer's region, in order.
const std::vector<std::size_t> kPieces = {
    1, 8, 1000, 1025, 4096 + 3, 70000, (std::size_t{3} << 20) + 5};

std::size_t slot_bytes() {
  std::size_t n = 64;  // the flags first
  for (std::size_t p : kPieces) n += (p + 63) / 64 * 64;
  return n;
}

std::vector<std::byte> pattern(int from, int to, int round, std::size_t bytes) {
  std::mt19937_64 rng(static_cast<std::uint64_t>(from) * 1000003u +
                      static_cast<std::uint64_t>(to) * 101u + static_cast<std::uint64_t>(round));
  std::vector<std::byte> v(bytes);
  for (auto& b : v) b = static_cast<std::byte>(rng() & 0xff);
  return v;
}

TEST(Transport, PutsLandBeforeTheirSignalAndSignalsKeepTheirOrder) {
  Group g(MPI_COMM_WORLD);
  if (g.num_nodes() < 2) GTEST_SKIP() << "needs two nodes (EPX_RANKS_PER_NODE)";
  const int me = g.rank(), R = g.size();
  comm::transport::Fabric fabric(g, kTimeoutS);
  const core::Deadline setup(kTimeoutS);
  const std::size_t slot = slot_bytes();
  const comm::transport::RegionId region =
      fabric.create_region(slot * static_cast<std::size_t>(R), setup);
  std::vector<int> remote;
  for (int p = 0; p < R; ++p)
    if (g.node_of(p) != g.node()) remote.push_back(p);
  const std::byte* base = fabric.local(region).get();
  for (int round = 1; round <= 3; ++round) {
    for (int p : remote) {
      std::size_t at = static_cast<std::size_t>(me) * slot + 64;
      std::vector<std::vector<std::byte>> sources;
      for (std::size_t bytes : kPieces) {
        sources.push_back(pattern(me, p, round * 16 + static_cast<int>(sources.size()), bytes));
        fabric.put(p, sources.back().data(), region, at, bytes);
        at += (bytes + 63) / 64 * 64;
      }
      fabric.to(p).signal(p, region, static_cast<std::size_t>(me) * slot,
                          static_cast<std::uint64_t>(round));
      fabric.to(p).flush(p);
      for (auto& s : sources) std::memset(s.data(), 0xA5, s.size());  // free once flush returned
    }
    for (int p : remote) {
      fabric.wait(region, static_cast<std::size_t>(p) * slot, static_cast<std::uint64_t>(round),
                  core::Deadline(kTimeoutS),
                  [&] { return "waiting for rank " + std::to_string(p); });
      std::size_t at = static_cast<std::size_t>(p) * slot + 64;
      for (std::size_t i = 0; i < kPieces.size(); ++i) {
        const auto want = pattern(p, me, round * 16 + static_cast<int>(i), kPieces[i]);
        ASSERT_EQ(std::memcmp(base + at, want.data(), kPieces[i]), 0)
            << "round " << round << ": piece " << i << " (" << kPieces[i] << " bytes) from rank "
            << p << " differs after its signal (" << fabric.name(p) << ")";
        at += (kPieces[i] + 63) / 64 * 64;
      }
    }
    MPI_Barrier(MPI_COMM_WORLD);  // every rank has checked before the next round overwrites
  }
  // 200 signals to one slot, nothing waited in between: the last value stays.
  const std::size_t order_slot = static_cast<std::size_t>(me) * slot + 8;
  for (int p : remote)
    for (std::uint64_t v = 1; v <= 200; ++v) fabric.to(p).signal(p, region, order_slot, v);
  for (int p : remote) fabric.to(p).flush(p);
  for (int p : remote) {
    const std::size_t at = static_cast<std::size_t>(p) * slot + 8;
    fabric.wait(region, at, 200, core::Deadline(kTimeoutS),
                [&] { return "order from rank " + std::to_string(p); });
  }
  MPI_Barrier(MPI_COMM_WORLD);  // nothing is in flight any more
  for (int p : remote) {
    std::uint64_t v = 0;
    std::memcpy(&v, base + static_cast<std::size_t>(p) * slot + 8, sizeof v);
    EXPECT_EQ(v, 200u) << "signals from rank " << p << " were stored out of order";
  }
}

}  // namespace
}  // namespace epx::test
