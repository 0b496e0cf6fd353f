// The incremental rebalance (rebalance_experts with the current placement):
// on random and Zipf loads before and after, on shapes with non-power-of-two
// experts, one and several nodes, hierarchical and global, with and without
// redundant slots, every result is a valid placement with the current
// locality, its copies (a plain-loop count, and migration_volume) fit the
// budget, 0 moves nothing, 1 is no worse than from scratch on any layer, it
// is never worse than staying, the minimum gain per copy holds, the calls
// are deterministic, and bad input is rejected with its value.
#include <cmath>
#include <map>
#include <string>

#include "balancer/budget.hpp"
#include "balancer/group_moves.hpp"
#include "tests/unit/balancer_testing.hpp"

namespace epx::balancer::testing {
namespace {

struct Shape {
  int experts, groups, replicas, nodes, gpus;
};

// Hierarchical (groups % nodes == 0) and global, E not a power of two, P = E
// (no redundant slot) and P > E, 1 to 4 nodes.
const Shape kShapes[] = {
    {12, 4, 16, 2, 8}, {30, 6, 36, 3, 6}, {30, 5, 30, 1, 5},  {24, 4, 24, 2, 4},  {48, 8, 60, 3, 6},
    {40, 8, 48, 4, 8}, {20, 2, 20, 1, 2}, {64, 8, 80, 2, 16}, {36, 6, 42, 2, 14}, {10, 5, 15, 3, 3},
};

// The (GPU, expert) pairs of `next` that `current` lacks, per layer: what
// migrate_experts sends between ranks, counted with plain loops.
std::vector<std::int64_t> copies_per_layer(const Placement& current, const Placement& next,
                                           int gpus) {
  const std::int64_t L = next.phy2log.dim(0), P = next.phy2log.dim(1), S = P / gpus;
  std::vector<std::int64_t> out(L, 0);
  for (std::int64_t l = 0; l < L; ++l) {
    for (int g = 0; g < gpus; ++g) {
      std::set<std::int64_t> had, has;
      for (std::int64_t i = 0; i < S; ++i) {
        had.insert(at(current.phy2log, l, g * S + i));
        has.insert(at(next.phy2log, l, g * S + i));
      }
      for (const std::int64_t e : has) out[l] += had.count(e) == 0;
    }
  }
  return out;
}

std::int64_t sum(const std::vector<std::int64_t>& v) {
  return std::accumulate(v.begin(), v.end(), std::int64_t{0});
}

// Loads before and after a drift: random integers >= 1, or Zipf with ranks
// reshuffled, alternating with the seed.
Tensor load_for(const Shape& s, int layers, std::uint64_t seed) {
  return seed % 2 ? random_load(layers, s.experts, seed, 1, 1000)
                  : zipf_load(layers, s.experts, 1.0, seed);
}

void expect_same(const Placement& a, const Placement& b) {
  ASSERT_EQ(a.phy2log.shape(), b.phy2log.shape());
  ASSERT_EQ(a.log2phy.shape(), b.log2phy.shape());
  for (std::int64_t i = 0; i < a.phy2log.numel(); ++i)
    ASSERT_EQ(a.phy2log.data<std::int64_t>()[i], b.phy2log.data<std::int64_t>()[i]);
  for (std::int64_t i = 0; i < a.log2phy.numel(); ++i)
    ASSERT_EQ(a.log2phy.data<std::int64_t>()[i], b.log2phy.data<std::int64_t>()[i]);
  for (std::int64_t i = 0; i < a.logcnt.numel(); ++i)
    ASSERT_EQ(a.logcnt.data<std::int64_t>()[i], b.logcnt.data<std::int64_t>()[i]);
}

// Rounding of GPU sums taken in another slot order.
constexpr double kRounding = 1e-12;

TEST(IncrementalRebalance, BudgetValidityAndBounds) {
  const int layers = 3;
  for (const Shape& s : kShapes) {
    for (std::uint64_t seed = 1; seed <= 4; ++seed) {
      SCOPED_TRACE(::testing::Message()
                   << "E=" << s.experts << " G=" << s.groups << " P=" << s.replicas
                   << " N=" << s.nodes << " K=" << s.gpus << " seed " << seed);
      const Tensor before = load_for(s, layers, seed), after = load_for(s, layers, seed + 100);
      const Placement current = rebalance_experts(before, s.replicas, s.groups, s.nodes, s.gpus);
      const Placement scratch = rebalance_experts(after, s.replicas, s.groups, s.nodes, s.gpus);
      const std::int64_t scratch_copies = migration_volume(current, scratch, s.gpus).matched;
      ASSERT_EQ(scratch_copies, sum(copies_per_layer(current, scratch, s.gpus)));
      const PlacementQuality q_cur = evaluate_placement(after, current, s.gpus);
      const PlacementQuality q_scratch = evaluate_placement(after, scratch, s.gpus);
      for (const double m : {0.0, 0.1, 0.25, 0.5, 1.0}) {
        SCOPED_TRACE(::testing::Message() << "max_migration " << m);
        IncrementalOptions o;
        o.max_migration = m;
        const Placement next = rebalance_experts(after, current, s.groups, s.nodes, s.gpus, o);
        expect_valid(next, after, s.replicas, s.groups, s.nodes, s.gpus);
        const std::vector<std::int64_t> copies = copies_per_layer(current, next, s.gpus);
        ASSERT_EQ(migration_volume(current, next, s.gpus).matched, sum(copies));
        EXPECT_LE(sum(copies), static_cast<std::int64_t>(std::floor(m * scratch_copies)));
        const PlacementQuality q = evaluate_placement(after, next, s.gpus);
        for (int l = 0; l < layers; ++l) {
          EXPECT_LE(q.gpu_max_over_mean[l], q_cur.gpu_max_over_mean[l] * (1 + kRounding))
              << "layer " << l << ": worse than staying";
          EXPECT_LE(q.same_gpu_duplicates[l],
                    std::max(q_cur.same_gpu_duplicates[l], q_scratch.same_gpu_duplicates[l]))
              << "layer " << l;
          if (m == 1.0) {  // braces: EXPECT_* is an if/else inside (-Wdangling-else)
            EXPECT_LE(q.gpu_max_over_mean[l], q_scratch.gpu_max_over_mean[l] * (1 + kRounding))
                << "layer " << l << ": worse than from scratch with its budget";
          }
        }
        if (m == 0.0) {
          EXPECT_EQ(sum(copies), 0);
        }
      }
    }
  }
}

// Replicas that stay keep their slot: on every GPU as many slots keep their
// expert as any relabelling could keep.
TEST(IncrementalRebalance, KeptReplicasKeepTheirSlots) {
  const Shape s{30, 6, 36, 3, 6};
  const Tensor before = load_for(s, 4, 7), after = load_for(s, 4, 8);
  const Placement current = rebalance_experts(before, s.replicas, s.groups, s.nodes, s.gpus);
  const Placement next = rebalance_experts(after, current, s.groups, s.nodes, s.gpus);
  const int S = s.replicas / s.gpus;
  for (int l = 0; l < 4; ++l) {
    for (int g = 0; g < s.gpus; ++g) {
      std::map<std::int64_t, int> cur, nxt;
      int kept = 0;
      for (int i = 0; i < S; ++i) {
        ++cur[at(current.phy2log, l, g * S + i)];
        ++nxt[at(next.phy2log, l, g * S + i)];
        kept += at(current.phy2log, l, g * S + i) == at(next.phy2log, l, g * S + i);
      }
      int best = 0;
      for (const auto& [e, n] : cur) best += std::min(n, nxt.count(e) ? nxt[e] : 0);
      EXPECT_EQ(kept, best) << "layer " << l << " GPU " << g;
    }
  }
}

// The bench's drift case in small (Zipf loads, a tenth of the experts trade
// loads): with the whole budget the incremental plan is at least as balanced
// as from scratch and moves no more; with none it moves nothing, and the
// drift is worth moving for.
TEST(IncrementalRebalance, DriftOfZipfLoads) {
  const Shape s{64, 8, 80, 2, 16};
  const int layers = 8;
  Tensor before = zipf_load(layers, s.experts, 1.0, 3);
  Tensor after = before.clone();
  std::mt19937_64 rng(4);
  for (int l = 0; l < layers; ++l) {
    float* row = after.data<float>() + l * s.experts;
    for (int k = 0; k < s.experts / 10; ++k)
      std::swap(row[rng() % s.experts], row[rng() % s.experts]);
  }
  const Placement current = rebalance_experts(before, s.replicas, s.groups, s.nodes, s.gpus);
  const Placement scratch = rebalance_experts(after, s.replicas, s.groups, s.nodes, s.gpus);
  auto mean_ratio = [&](const Placement& p) {
    const PlacementQuality q = evaluate_placement(after, p, s.gpus);
    return std::accumulate(q.gpu_max_over_mean.begin(), q.gpu_max_over_mean.end(), 0.0) / layers;
  };
  IncrementalOptions all;
  all.max_migration = 1;
  const Placement full = rebalance_experts(after, current, s.groups, s.nodes, s.gpus, all);
  EXPECT_LE(mean_ratio(full), mean_ratio(scratch) * (1 + kRounding));
  EXPECT_LE(migration_volume(current, full, s.gpus).matched,
            migration_volume(current, scratch, s.gpus).matched);
  const Placement stay = rebalance_experts(after, current, s.groups, s.nodes, s.gpus, {0.0, 0});
  EXPECT_EQ(migration_volume(current, stay, s.gpus).matched, 0);
  EXPECT_LT(mean_ratio(full), mean_ratio(stay)) << "the drift should be worth rebalancing";
}

TEST(IncrementalRebalance, MinimumGainPerCopy) {
  const Shape s{48, 8, 60, 3, 6};
  const int layers = 4;
  const Tensor before = load_for(s, layers, 11), after = load_for(s, layers, 12);
  const Placement current = rebalance_experts(before, s.replicas, s.groups, s.nodes, s.gpus);
  const PlacementQuality q_cur = evaluate_placement(after, current, s.gpus);
  for (const double gain : {0.0, 1e-3, 1e-2, 1e9}) {
    const Placement next =
        rebalance_experts(after, current, s.groups, s.nodes, s.gpus, {1.0, gain});
    const std::vector<std::int64_t> copies = copies_per_layer(current, next, s.gpus);
    const PlacementQuality q = evaluate_placement(after, next, s.gpus);
    for (int l = 0; l < layers; ++l) {
      EXPECT_GE(q_cur.gpu_max_over_mean[l] - q.gpu_max_over_mean[l] + kRounding,
                gain * static_cast<double>(copies[l]))
          << "min_gain_per_copy " << gain << " layer " << l;
    }
    if (gain == 1e9) {
      EXPECT_EQ(sum(copies), 0);
    }
  }
}

TEST(IncrementalRebalance, Deterministic) {
  const Shape s{40, 8, 48, 4, 8};
  const Tensor before = load_for(s, 3, 21), after = load_for(s, 3, 22);
  const Placement current = rebalance_experts(before, s.replicas, s.groups, s.nodes, s.gpus);
  const Placement a = rebalance_experts(after, current, s.groups, s.nodes, s.gpus, {0.3, 0});
  const Placement b = rebalance_experts(after, current, s.groups, s.nodes, s.gpus, {0.3, 0});
  expect_same(a, b);
}

// A layer without load has nothing to gain: it keeps its current placement.
TEST(IncrementalRebalance, LayerWithoutLoadStays) {
  const Shape s{12, 4, 16, 2, 8};
  const Tensor before = load_for(s, 2, 31);
  Tensor after = load_for(s, 2, 33);
  for (int e = 0; e < s.experts; ++e) after.data<std::int64_t>()[s.experts + e] = 0;
  const Placement current = rebalance_experts(before, s.replicas, s.groups, s.nodes, s.gpus);
  const Placement next = rebalance_experts(after, current, s.groups, s.nodes, s.gpus, {1.0, 0});
  for (int p = 0; p < s.replicas; ++p) EXPECT_EQ(at(next.phy2log, 1, p), at(current.phy2log, 1, p));
}

TEST(IncrementalRebalance, BadInput) {
  const Tensor load = random_load(2, 12, 1, 1, 9);
  const Placement current = rebalance_experts(load, 16, 4, 2, 8);
  expect_invalid(
      [&] {
        rebalance_experts(load, current, 4, 2, 8, {-0.1, 0});
      },
      {"max_migration = -0.1"});
  expect_invalid(
      [&] {
        rebalance_experts(load, current, 4, 2, 8, {1.5, 0});
      },
      {"max_migration = 1.5"});
  expect_invalid(
      [&] {
        rebalance_experts(load, current, 4, 2, 8, {std::nan(""), 0});
      },
      {"max_migration = nan"});
  expect_invalid(
      [&] {
        rebalance_experts(load, current, 4, 2, 8, {0.5, -1});
      },
      {"min_gain_per_copy = -1"});
  expect_invalid(
      [&] {
        rebalance_experts(load, current, 4, 2, 8, {0.5, INFINITY});
      },
      {"min_gain_per_copy = inf"});
  expect_invalid([&] { rebalance_experts(load, Placement{}, 4, 2, 8); },
                 {"current.phy2log is undefined"});
  // 16 slots on 3 GPUs; 2 layers of load against 1 of placement.
  expect_invalid([&] { rebalance_experts(load, current, 4, 1, 3); },
                 {"num_replicas = 16", "num_gpus = 3"});
  expect_invalid([&] { rebalance_experts(random_load(1, 12, 1, 1, 9), current, 4, 2, 8); },
                 {"current.phy2log layers"});
  Tensor negative = load.clone();
  negative.data<std::int64_t>()[5] = -3;
  expect_invalid([&] { rebalance_experts(negative, current, 4, 2, 8); }, {"load[0,5] = -3"});
  Placement bad = current;
  bad.phy2log = current.phy2log.clone();
  bad.phy2log.data<std::int64_t>()[3] = 12;
  expect_invalid([&] { rebalance_experts(load, bad, 4, 2, 8); }, {"current.phy2log[0,3] = 12"});
  // Expert 0's replicas renamed: it has none left.
  Placement orphan = current;
  orphan.phy2log = current.phy2log.clone();
  for (std::int64_t p = 0; p < 16; ++p)
    if (at(current.phy2log, 0, p) == 0) orphan.phy2log.data<std::int64_t>()[p] = 1;
  expect_invalid([&] { rebalance_experts(load, orphan, 4, 2, 8); }, {"expert 0 has no replica"});
  Placement f32 = current;
  f32.phy2log = Tensor::zeros({2, 16}, DType::f32);
  expect_invalid([&] { rebalance_experts(load, f32, 4, 2, 8); }, {"f32[2,16]"});
}

// A current placement without the hierarchical rule (here: placed as one
// node, now asked for two) cannot be kept: the call names the first group
// that spans nodes.
TEST(IncrementalRebalance, CurrentWithoutLocality) {
  const Tensor load = zipf_load(1, 12, 1.0, 5);
  // Experts 0, 3, 6, 9, 1, 4 on node 0 and 7 (group 2) on node 1, with 6.
  Placement mixed = rebalance_experts(load, 12, 4, 1, 4);
  std::vector<std::int64_t> rows{0, 3, 6, 9, 1, 4, 7, 10, 2, 5, 8, 11};
  std::copy(rows.begin(), rows.end(), mixed.phy2log.data<std::int64_t>());
  expect_invalid([&] { rebalance_experts(load, mixed, 4, 2, 4); },
                 {"current layer 0: group 2 has replicas on nodes 0 and 1"});
}

// Two heavy groups on node 0: one trade (group 0 for group 2) evens the
// nodes; the arriving experts take the freed slots, the rest stays.
TEST(GroupTrades, WorkedExample) {
  detail::Shape s;
  s.layers = 1;
  s.experts = 8;
  s.replicas = 8;
  s.groups = 4;
  s.nodes = 2;
  s.gpus = 4;
  s.hierarchical = true;
  const double load[8] = {10, 10, 10, 10, 1, 1, 1, 1};       // groups of 2 experts
  const std::int64_t current[8] = {0, 2, 1, 3, 4, 6, 5, 7};  // node 0: groups 0, 1
  EXPECT_EQ(detail::node_floor(load, current, s), 40.0 / 2);
  const auto starts = detail::group_trade_starts(load, current, s, 2);
  ASSERT_EQ(starts.size(), 1u) << "a second trade cannot lower the heavier node";
  // Group 2 (experts 4, 5) leaves slots 4 and 6 of node 1 to experts 0, 1,
  // heaviest first onto the lightest GPU; node 0 gives slots 0, 2 to 4, 5.
  const std::vector<std::int64_t> want{4, 2, 5, 3, 0, 6, 1, 7};
  EXPECT_EQ(starts[0], want);
  EXPECT_EQ(detail::node_floor(load, starts[0].data(), s), 22.0 / 2);
}

// allocate_budget on menus whose best choice is known.
TEST(AllocateBudget, WorkedExample) {
  using detail::LayerOption;
  const std::vector<std::vector<LayerOption>> menus{
      {{0, 2.0}, {1, 1.5}, {3, 1.0}, {2, 1.9}},  // {2, 1.9} is above the hull
      {{0, 1.8}, {2, 1.0}},
  };
  // Gains per copy: layer 0 0.5 then 0.25, layer 1 0.4.
  EXPECT_EQ(detail::allocate_budget(menus, 0, 0), (std::vector<int>{0, 0}));
  EXPECT_EQ(detail::allocate_budget(menus, 1, 0), (std::vector<int>{1, 0}));
  EXPECT_EQ(detail::allocate_budget(menus, 3, 0), (std::vector<int>{1, 1}));
  EXPECT_EQ(detail::allocate_budget(menus, 5, 0), (std::vector<int>{2, 1}));
  EXPECT_EQ(detail::allocate_budget(menus, 5, 0.3), (std::vector<int>{1, 1}));
  EXPECT_EQ(detail::allocate_budget(menus, 5, 0.45), (std::vector<int>{1, 0}));
}

TEST(AllocateBudget, RandomMenusFitTheBudget) {
  std::mt19937_64 rng(9);
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<std::vector<detail::LayerOption>> menus(1 + rng() % 6);
    std::int64_t most = 0;
    for (auto& m : menus) {
      m.push_back({0, 1.0 + (rng() % 1000) / 1000.0});
      std::int64_t costliest = 0;
      for (int k = static_cast<int>(rng() % 8); k > 0; --k) {
        m.push_back({static_cast<std::int64_t>(rng() % 20), 1.0 + (rng() % 1000) / 1000.0});
        costliest = std::max(costliest, m.back().copies);
      }
      most += costliest;
    }
    for (const std::int64_t budget : {std::int64_t{0}, std::int64_t{5}, most / 2, most}) {
      const std::vector<int> pick = detail::allocate_budget(menus, budget, 0);
      std::int64_t spent = 0;
      for (std::size_t l = 0; l < menus.size(); ++l) {
        spent += menus[l][pick[l]].copies;
        if (budget == most) {
          double best = menus[l][0].ratio;
          for (const auto& o : menus[l]) best = std::min(best, o.ratio);
          EXPECT_EQ(menus[l][pick[l]].ratio, best) << "trial " << trial << " layer " << l;
        }
      }
      EXPECT_LE(spent, budget) << "trial " << trial;
    }
  }
}

}  // namespace
}  // namespace epx::balancer::testing
