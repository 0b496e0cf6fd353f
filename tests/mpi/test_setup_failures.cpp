// Failures while a Buffer is built, and odd shapes: every rank fails together
// (or succeeds), nothing hangs, nothing is left in /dev/shm.
#include <dirent.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <string>
#include <thread>

#include "comm_fixture.hpp"

namespace epx::test {
namespace {

int last_rank() {
  return world().size() - 1;
}

// Epx's shared memory has no name (memfds), so an epx-* object in /dev/shm
// comes from another build running at the same time, for a moment, or is a leak.
bool shm_objects_left() {
  for (int attempt = 0; attempt < 500; ++attempt) {
    int found = 0;
    if (DIR* d = opendir("/dev/shm")) {
      while (dirent* e = readdir(d)) found += std::string(e->d_name).rfind("epx-", 0) == 0;
      closedir(d);
    }
    if (found == 0) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return true;
}

TEST(Setup, BadTimeoutOnOneRankFailsEveryRank) {
  comm::BufferOptions o{std::size_t{1} << 16, 30};
  if (world().rank() == last_rank()) o.timeout_s = -1;
  try {
    comm::Buffer b(world(), o);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::InvalidArgument) << e.what();
    const std::string msg = e.what();
    if (world().rank() == last_rank())
      EXPECT_NE(msg.find("options.timeout_s = -1"), std::string::npos) << msg;
    else
      EXPECT_NE(msg.find("rank " + std::to_string(last_rank())), std::string::npos) << msg;
  }
  comm::Buffer fine(world(), {std::size_t{1} << 16, 30});  // and the group still works
  EXPECT_GT(fine.capacity_bytes(), 0u);
}

TEST(Setup, ReceiveSpaceTooLargeOnOneRankFailsEveryRankAndLeavesNothing) {
  comm::BufferOptions o{std::size_t{1} << 16, 30};
  if (world().rank() == last_rank()) o.num_bytes = std::size_t{1} << 46;  // 64 TiB
  try {
    comm::Buffer b(world(), o);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::OutOfMemory) << e.what();
  }
  MPI_Barrier(MPI_COMM_WORLD);
  EXPECT_FALSE(shm_objects_left()) << "an epx-* object stayed in /dev/shm";
}

TEST(Setup, HugeTimeoutMeansNoLimit) {
  EXPECT_FALSE(core::Deadline(1e12).expired());
  EXPECT_FALSE(core::Deadline(INFINITY).expired());
  EXPECT_TRUE(core::Deadline(0).expired());
  comm::Buffer b(world(), {std::size_t{1} << 16, 1e12});
  Shape s;
  s.tokens = tokens_per_rank(5);
  s.experts = experts_for(2);
  RankInputs in = make_inputs(s, world().rank());
  comm::Layout layout = b.get_dispatch_layout(in.topk_idx, s.experts);
  EXPECT_EQ(layout.num_experts, s.experts);
}

TEST(Shapes, TopkOfZero) {
  comm::Buffer b(world(), {std::size_t{1} << 16, 30});
  const std::int64_t T = 6;
  Tensor x = Tensor::zeros({T, 32}, DType::bf16);
  Tensor idx = Tensor::empty({T, 0}, DType::i64);
  Tensor w = Tensor::empty({T, 0}, DType::f32);
  comm::Layout layout = b.get_dispatch_layout(idx, experts_for(1));
  comm::DispatchResult d = b.dispatch(x, idx, w, layout);
  EXPECT_EQ(d.x.dim(0), 0);
  EXPECT_EQ(d.topk_idx.dim(1), 0);
  EXPECT_EQ(d.num_recv_tokens_per_expert, std::vector<int>(1, 0));
  Tensor back = b.combine(d.x, d.handle);
  EXPECT_EQ(back.dim(0), T);
}

TEST(Shapes, Ue8m0MustAgree) {
  comm::Buffer b(world(), {std::size_t{1} << 20, 30});
  Shape s;
  s.tokens = tokens_per_rank(8);
  s.hidden = 128;
  s.experts = experts_for(2);
  RankInputs in = make_inputs(s, world().rank());
  comm::Layout layout = b.get_dispatch_layout(in.topk_idx, s.experts);
  comm::DispatchOptions o;
  o.fp8 = true;
  o.ue8m0 = world().rank() == last_rank() && world().size() > 1;
  if (world().size() > 1) {
    EXPECT_THROW(b.dispatch(in.x, in.topk_idx, in.topk_weights, layout, o), Error);
    o.ue8m0 = false;
  }
  comm::DispatchResult d = b.dispatch(in.x, in.topk_idx, in.topk_weights, layout, o);
  EXPECT_EQ(d.x.dtype(), DType::e4m3);
}

}  // namespace
}  // namespace epx::test
