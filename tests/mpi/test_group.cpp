// Group topology: physical nodes by default, virtual nodes from
// EPX_RANKS_PER_NODE or the constructor, checked against plain arithmetic.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <optional>
#include <thread>
#include <vector>

#include <epx/epx.hpp>

#include "comm/transport/registry.hpp"

namespace epx {
namespace {

int world_rank() {
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}
int world_size() {
  int s = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &s);
  return s;
}

// The shape a ranks_per_node of `rpn` must give (consecutive ranks, last node may be short).
void expect_virtual_shape(const Group& g, int rpn) {
  const int R = world_size(), me = world_rank();
  EXPECT_EQ(g.rank(), me);
  EXPECT_EQ(g.size(), R);
  EXPECT_EQ(g.node(), me / rpn);
  EXPECT_EQ(g.num_nodes(), (R + rpn - 1) / rpn);
  EXPECT_EQ(g.local_rank(), me % rpn);
  const int first = me / rpn * rpn, last = std::min(R, first + rpn);
  EXPECT_EQ(g.local_size(), last - first);
  ASSERT_EQ(static_cast<int>(g.node_ranks().size()), last - first);
  for (int i = 0; i < last - first; ++i) EXPECT_EQ(g.node_ranks()[i], first + i);
  int node_size = 0;
  MPI_Comm_size(g.node_comm(), &node_size);
  EXPECT_EQ(node_size, last - first);
  for (int r = 0; r < R; ++r) EXPECT_EQ(g.node_of(r), r / rpn);
}

TEST(Group, DefaultIsOneNodePerHost) {
  const char* env = std::getenv("EPX_RANKS_PER_NODE");
  if (env && *env) GTEST_SKIP() << "EPX_RANKS_PER_NODE is set for this run";
  Group g(MPI_COMM_WORLD);
  expect_virtual_shape(g, world_size());  // one host: one node of every rank
}

TEST(Group, VirtualNodesFromTheConstructor) {
  for (int rpn = 1; rpn <= world_size(); ++rpn) {
    Group g(MPI_COMM_WORLD, rpn);
    expect_virtual_shape(g, rpn);
  }
}

TEST(Group, VirtualNodesFromTheEnvironment) {
  const char* env = std::getenv("EPX_RANKS_PER_NODE");
  if (!env || !*env) GTEST_SKIP() << "run with EPX_RANKS_PER_NODE set";
  Group g(MPI_COMM_WORLD);
  expect_virtual_shape(g, std::atoi(env));
}

TEST(Group, RanksMustAgreeOnTheShape) {
  if (world_size() < 2) GTEST_SKIP() << "needs two ranks";
  try {
    Group g(MPI_COMM_WORLD, world_rank() == world_size() - 1 ? 2 : 1);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::InvalidArgument);
    EXPECT_NE(std::string(e.what()).find("ranks_per_node"), std::string::npos) << e.what();
  }
}

TEST(Group, SplitKeepsTopologyRules) {
  Group g(MPI_COMM_WORLD, 1);
  Group half = g.split(world_rank() % 2, world_rank());
  EXPECT_EQ(half.size(), (world_size() + 1 - world_rank() % 2) / 2);
  EXPECT_EQ(half.num_nodes(), half.size());  // one rank per node, as in the parent
}

TEST(Group, BufferPicksShmInsideANodeAndTheChosenTransportBetweenNodes) {
  // EPX_INTERNODE_TRANSPORT, the build and the host choose: msg by default
  // without an RDMA device.
  const std::string choice = comm::transport::internode_choice().name;
  const std::string between = choice == "ucx" ? "ucx" : choice == "msg" ? "mpi-msg" : "mpi";
  for (int rpn : {1, 2, world_size()}) {
    if (world_size() % rpn != 0) continue;  // a Buffer needs nodes of one size (next test)
    Group g(MPI_COMM_WORLD, rpn);
    comm::Buffer b(g, {std::size_t{1} << 16, 30});
    for (int peer = 0; peer < g.size(); ++peer)
      EXPECT_EQ(b.transport_name(peer), g.node_of(peer) == g.node() ? "shm" : between)
          << "peer " << peer << " with " << rpn << " ranks per node (" << choice << ")";
  }
}

// The hierarchical path pairs ranks of equal local index across nodes: a
// Buffer over nodes of different sizes fails on every rank, saying so.
TEST(Group, BufferRefusesNodesOfDifferentSizes) {
  if (world_size() < 3 || world_size() % 2 == 0) GTEST_SKIP() << "needs an odd rank count >= 3";
  Group g(MPI_COMM_WORLD, 2);
  try {
    comm::Buffer b(g, {std::size_t{1} << 16, 30});
    ADD_FAILURE() << "no error for nodes of different sizes";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::InvalidArgument);
    EXPECT_NE(std::string(e.what()).find("different numbers of ranks"), std::string::npos) << e.what();
  }
}

bool eventually_aborted(const Group& g) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!g.aborted() && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  return g.aborted();
}

// The first reason a rank sees stays: its own, or the peer's that came first.
TEST(Group, AbortIsSticky) {
  Group g(MPI_COMM_WORLD);
  EXPECT_FALSE(g.aborted());
  MPI_Barrier(MPI_COMM_WORLD);  // every rank looked before rank 0 aborts
  if (g.rank() == 0) g.abort("test reason");
  EXPECT_TRUE(eventually_aborted(g));
  g.abort("second reason is ignored");
  EXPECT_TRUE(g.aborted());
  EXPECT_EQ(g.abort_reason(),
            g.rank() == 0 ? "test reason" : "rank 0 aborted the group: test reason");
  MPI_Barrier(MPI_COMM_WORLD);
}

// Group::abort on one rank reaches every rank of the group (no Buffer or
// other module needed), and a Buffer on the group then fails on every rank.
TEST(Group, AbortReachesEveryRank) {
  Group g(MPI_COMM_WORLD);
  // A Buffer needs nodes of one size (every rank decides alike, from node_of).
  std::vector<int> per_node(static_cast<std::size_t>(g.num_nodes()), 0);
  for (int r = 0; r < g.size(); ++r) ++per_node[g.node_of(r)];
  const bool even =
      std::all_of(per_node.begin(), per_node.end(), [&](int n) { return n == per_node[0]; });
  std::optional<comm::Buffer> b;
  if (even) b.emplace(g, comm::BufferOptions{std::size_t{1} << 16, 60});
  const int last = g.size() - 1;
  if (g.rank() == last) g.abort("stop from the last rank");
  EXPECT_TRUE(eventually_aborted(g));
  const std::string want = g.rank() == last ? "stop from the last rank"
                                            : "rank " + std::to_string(last) +
                                                  " aborted the group: stop from the last rank";
  EXPECT_EQ(g.abort_reason(), want);
  try {
    if (b) {
      b->get_dispatch_layout(Tensor::zeros({2, 1}, DType::i64), g.size());
      ADD_FAILURE() << "the Buffer ran on an aborted group";
    }
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::PeerFailure) << e.what();
    EXPECT_TRUE(e.poisoned());
  }
  // Copies share the failure state; a split group has its own.
  const Group copy = g;
  EXPECT_TRUE(copy.aborted());
  MPI_Barrier(MPI_COMM_WORLD);
}

// A late abort of a group that is gone never aborts a newer group, though MPI
// may give the newer group's channel the freed one's id.
TEST(Group, AnOldGroupsAbortDoesNotReachANewGroup) {
  for (int round = 0; round < 3; ++round) {
    {
      Group old(MPI_COMM_WORLD);
      if (old.rank() == 0) old.abort("meant for the old group");
      MPI_Barrier(MPI_COMM_WORLD);  // the others never poll it: its message stays unread
    }
    Group fresh(MPI_COMM_WORLD);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    EXPECT_FALSE(fresh.aborted()) << fresh.abort_reason();
    MPI_Barrier(MPI_COMM_WORLD);
  }
}

}  // namespace
}  // namespace epx
