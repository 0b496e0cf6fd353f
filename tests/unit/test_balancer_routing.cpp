// route_to_replicas: every pair goes to a replica of its own expert, on the
// rank's node when the expert has one there, spread evenly over the
// candidates (per rank, per expert: counts differ by at most one); -1 stays
// -1; bad input names the value.
#include <functional>
#include <map>

#include "tests/unit/balancer_testing.hpp"

namespace epx::balancer::testing {
namespace {

Tensor random_topk(int tokens, int k, int experts, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  Tensor t = Tensor::empty({tokens, k}, DType::i64);
  for (std::int64_t i = 0; i < t.numel(); ++i) {
    // Skewed towards low expert ids, and about one pair in ten unused.
    const std::int64_t e = static_cast<std::int64_t>(std::pow(rng() % 1000 / 1000.0, 2) * experts);
    t.data<std::int64_t>()[i] = rng() % 10 == 0 ? -1 : e;
  }
  return t;
}

void check_routing(const Tensor& load, int replicas, int groups, int nodes, int gpus) {
  const Placement p = rebalance_experts(load, replicas, groups, nodes, gpus);
  const std::int64_t experts = load.dim(1);
  const int slots_per_gpu = replicas / gpus, gpus_per_node = gpus / nodes;
  for (int layer = 0; layer < load.dim(0); ++layer) {
    const Tensor topk = random_topk(97, 6, static_cast<int>(experts), 100 + layer);
    for (int rank = 0; rank < gpus; ++rank) {
      const Tensor slots = route_to_replicas(topk, p, {layer, rank, gpus, nodes});
      ASSERT_EQ(slots.shape(), topk.shape());
      const int node = rank / gpus_per_node;
      std::map<std::int64_t, std::map<std::int64_t, int>> per_expert;  // e -> slot -> pairs
      for (std::int64_t i = 0; i < topk.numel(); ++i) {
        const std::int64_t e = topk.data<std::int64_t>()[i], s = slots.data<std::int64_t>()[i];
        if (e == -1) {
          ASSERT_EQ(s, -1);
          continue;
        }
        ASSERT_GE(s, 0);
        ASSERT_LT(s, replicas);
        ASSERT_EQ(at(p.phy2log, layer, s), e) << "slot " << s << " does not hold expert " << e;
        ++per_expert[e][s];
      }
      for (const auto& [e, used] : per_expert) {
        // Candidates: e's replicas on this node if any, else all of them.
        std::vector<std::int64_t> local, all;
        for (std::int64_t s = 0; s < replicas; ++s) {
          if (at(p.phy2log, layer, s) != e) continue;
          all.push_back(s);
          if (s / slots_per_gpu / gpus_per_node == node) local.push_back(s);
        }
        const std::vector<std::int64_t>& cand = local.empty() ? all : local;
        int lo = 1 << 30, hi = 0;
        for (std::int64_t s : cand) {
          const int c = used.count(s) ? used.at(s) : 0;
          lo = std::min(lo, c);
          hi = std::max(hi, c);
        }
        for (const auto& [s, c] : used)
          ASSERT_NE(std::find(cand.begin(), cand.end(), s), cand.end())
              << "expert " << e << " routed to slot " << s << " off the candidates";
        EXPECT_LE(hi - lo, 1) << "layer " << layer << " rank " << rank << " expert " << e;
      }
    }
  }
}

TEST(BalancerRouting, HierarchicalPlacement) {
  check_routing(zipf_load(3, 16, 1.2, 4), 24, 4, 2, 8);
}

TEST(BalancerRouting, GlobalPlacementPrefersOwnNode) {
  // 3 groups on 2 nodes: global, so a hot expert's replicas span both nodes.
  check_routing(zipf_load(3, 12, 1.5, 5), 24, 3, 2, 4);
}

TEST(BalancerRouting, Deterministic) {
  const Tensor load = zipf_load(1, 16, 1.0, 6);
  const Placement p = rebalance_experts(load, 24, 4, 2, 8);
  const Tensor topk = random_topk(50, 4, 16, 7);
  const Tensor a = route_to_replicas(topk, p, {0, 3, 8, 2});
  const Tensor b = route_to_replicas(topk, p, {0, 3, 8, 2});
  for (std::int64_t i = 0; i < a.numel(); ++i)
    ASSERT_EQ(a.data<std::int64_t>()[i], b.data<std::int64_t>()[i]);
}

void expect_invalid(const std::function<void()>& call, const std::string& words) {
  try {
    call();
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::InvalidArgument);
    EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << e.what();
  }
}

TEST(BalancerRouting, BadInput) {
  const Placement p = rebalance_experts(random_load(2, 8, 1, 1, 9), 8, 2, 2, 4);
  Tensor topk = random_topk(5, 2, 8, 1);
  topk.data<std::int64_t>()[3] = 8;
  expect_invalid([&] { route_to_replicas(topk, p, {0, 0, 4, 2}); }, "topk_idx[1,1] = 8");
  topk.data<std::int64_t>()[3] = 0;
  expect_invalid([&] { route_to_replicas(topk, p, {2, 0, 4, 2}); }, "layer = 2");
  expect_invalid([&] { route_to_replicas(topk, p, {0, 4, 4, 2}); }, "rank = 4");
  expect_invalid([&] { route_to_replicas(topk, p, {0, 0, 3, 1}); }, "num_gpus = 3");
  expect_invalid([&] { route_to_replicas(topk, p, {0, 0, 4, 3}); }, "num_nodes = 3");
  expect_invalid(
      [&] {
        route_to_replicas(Tensor::zeros({5, 2}, DType::i32), p, {0, 0, 4, 2});
      },
      "i32[5,2]");
}

}  // namespace
}  // namespace epx::balancer::testing
