// Replica routing through comm: route_to_replicas turns logical top-k ids
// into physical slots, and a comm::Buffer with num_experts = P delivers every
// token to the rank holding the chosen replica (slot p lives on rank
// p / (P/R), which is where a Placement puts it). Checked on every rank
// count and node shape: each (token, expert) reaches a replica of its
// expert, on its own node when one is there, and replicas of one expert get
// even loads.
#include <gtest/gtest.h>

#include <epx/epx.hpp>
#include <map>
#include <random>

#include "../unit/balancer_testing.hpp"

namespace epx::balancer {
namespace {

Group& world() {
  static Group g(MPI_COMM_WORLD);
  return g;
}

constexpr int kTopk = 4;
constexpr std::int64_t kHidden = 128;

// Rank r's logical top-k: distinct experts drawn by load (hot experts get
// more tokens), the last one -1 for every fifth token.
Tensor logical_topk(int rank, const Tensor& load, std::int64_t experts) {
  const std::int64_t tokens = 150 + 37 * rank;
  std::mt19937_64 rng(1000 + rank);
  std::vector<double> w(static_cast<std::size_t>(experts));
  for (std::int64_t e = 0; e < experts; ++e) w[e] = 1 + load.data<float>()[e];
  Tensor t = Tensor::empty({tokens, kTopk}, DType::i64);
  std::int64_t* idx = t.data<std::int64_t>();
  for (std::int64_t i = 0; i < tokens; ++i) {
    std::vector<double> left = w;
    for (int k = 0; k < kTopk; ++k) {
      std::discrete_distribution<std::int64_t> pick(left.begin(), left.end());
      const std::int64_t e = pick(rng);
      left[e] = 0;
      idx[i * kTopk + k] = (k == kTopk - 1 && i % 5 == 0) ? -1 : e;
    }
  }
  return t;
}

class ReplicaRouting : public ::testing::TestWithParam<bool> {};

TEST_P(ReplicaRouting, DispatchReachesReplicasEvenly) {
  const bool hierarchical = GetParam();
  Group& g = world();
  const int R = g.size(), me = g.rank();
  const int nodes = R % g.num_nodes() == 0 ? g.num_nodes() : 1;
  const int experts = 6 * R, P = experts + 2 * R, S = P / R;
  // groups % nodes != 0 gives a global placement: an expert's replicas may
  // then sit on several nodes, and the node preference decides.
  const int groups = hierarchical ? 2 * nodes : (nodes > 1 ? 1 : 2);
  const Tensor load = testing::zipf_load(1, experts, 1.0, 5);
  const Placement placement = rebalance_experts(load, P, groups, nodes, R);
  auto node_of_gpu = [&](std::int64_t gpu) { return static_cast<int>(gpu / (R / nodes)); };
  auto route = [&](int rank) {
    return route_to_replicas(logical_topk(rank, load, experts), placement, {0, rank, R, nodes});
  };

  const Tensor logical = logical_topk(me, load, experts);
  const Tensor physical = route(me);
  const std::int64_t T = logical.dim(0);
  Tensor x = Tensor::zeros({T, kHidden}, DType::f32);
  Tensor weights = Tensor::empty({T, kTopk}, DType::f32);
  for (std::int64_t t = 0; t < T; ++t) {
    x.data<float>()[t * kHidden] = static_cast<float>(me);
    x.data<float>()[t * kHidden + 1] = static_cast<float>(t);
  }
  for (std::int64_t i = 0; i < T * kTopk; ++i) weights.data<float>()[i] = 1;
  comm::Buffer buffer(g, {std::size_t{1} << 22, 60});
  const comm::Layout layout = buffer.get_dispatch_layout(physical, P);
  const comm::DispatchResult got = buffer.dispatch(x, physical, weights, layout);

  // Every received row against its source's routing, recomputed here.
  std::map<int, std::pair<Tensor, Tensor>> sources;  // rank -> (logical, physical)
  std::vector<std::int64_t> rows_from(static_cast<std::size_t>(R), 0);
  std::vector<std::int64_t> per_slot(static_cast<std::size_t>(P), 0);  // pairs received
  for (std::int64_t row = 0; row < got.x.dim(0); ++row) {
    const int src = static_cast<int>(got.x.data<float>()[row * kHidden]);
    const std::int64_t t = static_cast<std::int64_t>(got.x.data<float>()[row * kHidden + 1]);
    // No ASSERT: every rank must reach the all-reduce below (a rank that
    // returned early would leave the others waiting).
    if (src < 0 || src >= R) {
      ADD_FAILURE() << "row " << row << " says it came from rank " << src << " of " << R;
      continue;
    }
    if (!sources.count(src)) sources[src] = {logical_topk(src, load, experts), route(src)};
    const auto& [lg, ph] = sources[src];
    ++rows_from[src];
    for (int k = 0; k < kTopk; ++k) {
      const std::int64_t slot = ph.data<std::int64_t>()[t * kTopk + k];
      const std::int64_t e = lg.data<std::int64_t>()[t * kTopk + k];
      const std::int64_t local = got.topk_idx.data<std::int64_t>()[row * kTopk + k];
      const bool mine = slot >= me * S && slot < (me + 1) * S;
      EXPECT_EQ(local, mine ? slot - me * S : -1) << "row " << row << " k " << k;
      if (!mine) continue;
      ++per_slot[slot];
      // The slot holds a replica of the token's logical expert ...
      EXPECT_EQ(testing::at(placement.phy2log, 0, slot), e);
      // ... on the token's own node whenever the expert has a replica there.
      bool on_src_node = false;
      for (std::int64_t c = 0; c < testing::at(placement.logcnt, 0, e); ++c)
        on_src_node |=
            node_of_gpu(placement.log2phy.data<std::int64_t>()[e * placement.log2phy.dim(2) + c] /
                        S) == g.node_of(src);
      if (on_src_node) {
        EXPECT_EQ(g.node_of(me), g.node_of(src)) << "expert " << e << " from rank " << src;
      }
    }
  }
  // Every token that had a replica here arrived once.
  for (int src = 0; src < R; ++src) {
    const Tensor ph = route(src);
    std::int64_t want = 0;
    for (std::int64_t t = 0; t < ph.dim(0); ++t) {
      bool here = false;
      for (int k = 0; k < kTopk; ++k) {
        const std::int64_t slot = ph.data<std::int64_t>()[t * kTopk + k];
        here |= slot >= me * S && slot < (me + 1) * S;
      }
      want += here;
    }
    EXPECT_EQ(rows_from[src], want) << "tokens from rank " << src;
  }
  // Balance: replicas of one expert on one node get the same load within one
  // pair per source rank (each rank spreads an expert round-robin over the
  // candidates, which are a node's replicas or all of them).
  std::vector<std::int64_t> total(per_slot.size());
  MPI_Allreduce(per_slot.data(), total.data(), P, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD);
  for (int e = 0; e < experts; ++e) {
    std::map<int, std::pair<std::int64_t, std::int64_t>> range;  // node -> (min, max)
    for (std::int64_t c = 0; c < testing::at(placement.logcnt, 0, e); ++c) {
      const std::int64_t slot =
          placement.log2phy.data<std::int64_t>()[e * placement.log2phy.dim(2) + c];
      const int n = node_of_gpu(slot / S);
      auto [it, fresh] = range.emplace(n, std::make_pair(total[slot], total[slot]));
      it->second.first = std::min(it->second.first, total[slot]);
      it->second.second = std::max(it->second.second, total[slot]);
    }
    for (const auto& [n, mm] : range)
      EXPECT_LE(mm.second - mm.first, R) << "expert " << e << " on node " << n << ": replica loads "
                                         << mm.first << " to " << mm.second;
  }
}

INSTANTIATE_TEST_SUITE_P(Placements, ReplicaRouting, ::testing::Values(true, false),
                         [](const ::testing::TestParamInfo<bool>& i) {
                           return std::string(i.param ? "hierarchical" : "global");
                         });

}  // namespace
}  // namespace epx::balancer
