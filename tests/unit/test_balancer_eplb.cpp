// Policy::eplb: DeepSeek's published example reproduced exactly, and the
// greedy rules (ties, zeros, identity packing) checked on small cases.
#include "tests/unit/balancer_testing.hpp"

namespace epx::balancer::testing {
namespace {

const std::vector<std::vector<std::int64_t>> kPublishedLoad = {
    {90, 132, 40, 61, 104, 165, 39, 4, 73, 56, 183, 86},
    {20, 107, 104, 64, 19, 197, 187, 157, 172, 86, 16, 27}};
const std::vector<std::vector<std::int64_t>> kPublishedPhy2Log = {
    {5, 6, 5, 7, 8, 4, 3, 4, 10, 9, 10, 2, 0, 1, 11, 1},
    {7, 10, 6, 8, 6, 11, 8, 9, 2, 4, 5, 1, 5, 0, 3, 1}};

std::vector<std::vector<std::int64_t>> rows(const Tensor& t) {
  std::vector<std::vector<std::int64_t>> out(t.dim(0));
  for (std::int64_t i = 0; i < t.dim(0); ++i)
    for (std::int64_t j = 0; j < t.dim(1); ++j) out[i].push_back(at(t, i, j));
  return out;
}

TEST(BalancerEplb, PublishedExample) {
  const Tensor load = make_load(kPublishedLoad);
  const Placement p = rebalance_experts(load, 16, 4, 2, 8, Policy::eplb);
  EXPECT_EQ(rows(p.phy2log), kPublishedPhy2Log);
  expect_valid(p, load, 16, 4, 2, 8);
  // The same loads as f32 give the same placement (EPLB computes in float32).
  Tensor f = Tensor::empty({2, 12}, DType::f32);
  for (int i = 0; i < 24; ++i)
    f.data<float>()[i] = static_cast<float>(load.data<std::int64_t>()[i]);
  EXPECT_EQ(rows(rebalance_experts(f, 16, 4, 2, 8, Policy::eplb).phy2log), kPublishedPhy2Log);
}

TEST(BalancerEplb, PublishedExampleCountsAndSlots) {
  const Placement p = rebalance_experts(make_load(kPublishedLoad), 16, 4, 2, 8, Policy::eplb);
  // Layer 0: experts 1, 4, 5 and 10 got the four redundant slots.
  const std::vector<std::int64_t> cnt0 = {1, 2, 1, 1, 2, 2, 1, 1, 1, 1, 2, 1};
  for (int e = 0; e < 12; ++e) EXPECT_EQ(at(p.logcnt, 0, e), cnt0[e]) << "expert " << e;
  // log2phy lists the slots ascending: expert 5 of layer 0 is in slots 0 and 2.
  const std::int64_t* l2p = p.log2phy.data<std::int64_t>() + 5 * p.log2phy.dim(2);
  EXPECT_EQ(l2p[0], 0);
  EXPECT_EQ(l2p[1], 2);
}

// Global mode (groups % nodes != 0): one replication over all experts, one
// packing over all GPUs. Worked by hand: loads 8,4,2,1 into 6 slots on 2 GPUs.
// Extra 1 goes to expert 0 (8/1); extra 2 is a tie, 8/2 = 4/1, and the first
// argmax (expert 0) wins. Slots [e0,e1,e2,e3,e0,e0] carry 8/3,4,2,1,8/3,8/3;
// stable descending order: s1 s0 s4 s5 s2 s3. Packing (3 per GPU): s1 -> G0
// (tie, lowest index), s0 -> G1, s4 -> G1, s5 -> G0 (4 < 5.33), s2 -> G1
// (5.33 < 6.67, now full), s3 -> G0. GPU-major: G0 = e1 e0 e3, G1 = e0 e0 e2.
TEST(BalancerEplb, GlobalGreedyByHand) {
  const Tensor load = make_load({{8, 4, 2, 1}});
  const Placement p = rebalance_experts(load, 6, 1, 2, 2, Policy::eplb);
  expect_valid(p, load, 6, 1, 2, 2);
  EXPECT_EQ(at(p.logcnt, 0, 0), 3);
  EXPECT_EQ(at(p.logcnt, 0, 1), 1);
  const std::vector<std::vector<std::int64_t>> expect = {{1, 0, 3, 0, 0, 2}};
  EXPECT_EQ(rows(p.phy2log), expect);
}

TEST(BalancerEplb, ZerosAndTiesKeepIndexOrder) {
  // All zero: every load per replica is 0, so the first expert takes every
  // extra slot. All equal: the extras go round in index order.
  const Tensor load = make_load({{0, 0, 0, 0}, {5, 5, 5, 5}});
  const Placement p = rebalance_experts(load, 8, 1, 1, 2, Policy::eplb);
  expect_valid(p, load, 8, 1, 1, 2);
  const std::vector<std::vector<std::int64_t>> counts = {{5, 1, 1, 1}, {2, 2, 2, 2}};
  EXPECT_EQ(rows(p.logcnt), counts);
  // Equal replica loads keep slot order (stable sort) and alternate between
  // the GPUs (lightest, lowest index on ties): GPU 0 gets slots 0, 2, 4, 6.
  // EPLB puts both replicas of experts 0 and 2 on GPU 0: duplicates.
  const std::vector<std::int64_t> layer1 = {0, 2, 0, 2, 1, 3, 1, 3};
  EXPECT_EQ(rows(p.phy2log)[1], layer1);
}

TEST(BalancerEplb, OneGpuAndNoRedundancy) {
  const Tensor load = random_load(3, 10, 7, 1, 100);
  const Placement one = rebalance_experts(load, 13, 2, 1, 1, Policy::eplb);
  expect_valid(one, load, 13, 2, 1, 1);
  // No redundant slot: every expert exactly once.
  const Placement none = rebalance_experts(load, 10, 5, 5, 5, Policy::eplb);
  expect_valid(none, load, 10, 5, 5, 5);
  for (std::int64_t i = 0; i < none.logcnt.numel(); ++i)
    EXPECT_EQ(none.logcnt.data<std::int64_t>()[i], 1);
}

}  // namespace
}  // namespace epx::balancer::testing
