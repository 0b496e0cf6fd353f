// rebalance_experts with a current placement (include/epx/balancer.hpp):
// check the input, build each layer's options (the local search's path from
// the current placement, from placements with groups traded between nodes
// when the node split limits it, and the from-scratch placement),
// spend the copy budget over the layers (budget.hpp), and assemble the
// chosen rows.
#include <cmath>
#include <epx/balancer.hpp>
#include <set>

#include "balancer/budget.hpp"
#include "balancer/group_moves.hpp"
#include "balancer/incremental_search.hpp"
#include "balancer/migrate_plan.hpp"
#include "balancer/problem.hpp"
#include "balancer/score.hpp"
#include "core/check.hpp"
#include "core/log.hpp"

namespace epx::balancer {

namespace {

const char* const kOp = "rebalance_experts";

void check_options(const IncrementalOptions& o) {
  EPX_CHECK(std::isfinite(o.max_migration) && o.max_migration >= 0 && o.max_migration <= 1,
            InvalidArgument, kOp, ": options.max_migration = ", o.max_migration,
            ", expected 0 <= max_migration <= 1 (a fraction of a from-scratch plan's copies)");
  EPX_CHECK(std::isfinite(o.min_gain_per_copy) && o.min_gain_per_copy >= 0, InvalidArgument, kOp,
            ": options.min_gain_per_copy = ", o.min_gain_per_copy,
            ", expected a finite value >= 0");
}

// In hierarchical mode every group of `current` must sit on one node, and
// every node hold groups/nodes groups: the search keeps groups where they are.
void check_locality(const std::int64_t* phy2log, const detail::Shape& s) {
  if (!s.hierarchical) return;
  const int group_size = s.experts / s.groups, slots_per_node = s.replicas / s.nodes;
  std::vector<int> node_of(s.groups);
  for (int l = 0; l < s.layers; ++l) {
    std::fill(node_of.begin(), node_of.end(), -1);
    std::vector<std::set<int>> groups_on(s.nodes);
    for (int p = 0; p < s.replicas; ++p) {
      const int g =
          static_cast<int>(phy2log[static_cast<std::int64_t>(l) * s.replicas + p]) / group_size;
      const int n = p / slots_per_node;
      EPX_CHECK(node_of[g] < 0 || node_of[g] == n, InvalidArgument, kOp, ": current layer ", l,
                ": group ", g, " has replicas on nodes ", node_of[g], " and ", n,
                ", expected one node per group (num_groups = ", s.groups, ", num_nodes = ", s.nodes,
                " is hierarchical)");
      node_of[g] = n;
      groups_on[n].insert(g);
    }
    for (int n = 0; n < s.nodes; ++n) {
      EPX_CHECK(static_cast<int>(groups_on[n].size()) == s.groups / s.nodes, InvalidArgument, kOp,
                ": current layer ", l, ": node ", n, " holds ", groups_on[n].size(),
                " groups, expected num_groups / num_nodes = ", s.groups / s.nodes);
    }
  }
}

double ratio(double max_load, double mean) {
  return mean > 0 ? max_load / mean : 1.0;
}

// A search ending within this fraction of its node floor is limited by the
// group -> node split (it rarely gets closer: the floor assumes the heaviest
// node's GPUs share its load exactly).
constexpr double kAtFloor = 1e-2;
// Group trades tried per layer (each a search of its own).
constexpr int kMaxGroupTrades = 2;

struct LayerPath {
  std::vector<std::int64_t> start;  // [P]
  detail::SearchPath path;
};

// Where a menu option comes from: step `step` of paths[path], or the
// from-scratch placement (path -1).
struct Source {
  int path = -1;
  std::size_t step = 0;
};

}  // namespace

Placement rebalance_experts(const Tensor& load, const Placement& current, int num_groups,
                            int num_nodes, int num_gpus, const IncrementalOptions& options) {
  check_options(options);
  const Tensor& cur = current.phy2log;
  EPX_CHECK(cur.defined() && cur.ndim() == 2, InvalidArgument, kOp, ": current.phy2log is ",
            cur.defined() ? cur.describe() : std::string("undefined"), ", expected i64 [L,P]");
  EPX_CHECK(cur.dim(1) <= INT32_MAX, InvalidArgument, kOp, ": current.phy2log is ", cur.describe(),
            ", too large");
  const detail::Shape s =
      detail::check_problem(load, static_cast<int>(cur.dim(1)), num_groups, num_nodes, num_gpus);
  const std::int64_t* cur_p2l =
      detail::checked_phy2log(kOp, "current", current, s.layers, s.experts);
  check_locality(cur_p2l, s);

  // The from-scratch plan: one option per layer, and the measure of the budget
  // (its copies do not depend on slot order within GPUs).
  const Placement scratch =
      rebalance_experts(load, s.replicas, num_groups, num_nodes, num_gpus, Policy::balanced);
  detail::PlacementPair pair;
  pair.layers = s.layers;
  pair.experts = s.experts;
  pair.gpus = s.gpus;
  pair.current_slots = pair.target_slots = s.replicas;
  pair.current = cur_p2l;
  pair.target = scratch.phy2log.data<std::int64_t>();
  const std::vector<MigrationVolume> scratch_volume = detail::volume_per_layer(pair);
  std::int64_t scratch_copies = 0;
  for (const MigrationVolume& v : scratch_volume) scratch_copies += v.matched;
  const auto budget = static_cast<std::int64_t>(
      std::floor(options.max_migration * static_cast<double>(scratch_copies)));

  const std::vector<double> w = detail::load_as<double>(load);
  const std::int64_t* scratch_p2l = scratch.phy2log.data<std::int64_t>();
  std::vector<std::vector<LayerPath>> paths(s.layers);
  std::vector<std::vector<detail::LayerOption>> menus(s.layers);
  std::vector<std::vector<Source>> sources(s.layers);
  std::vector<int> scratch_count;
  for (int l = 0; l < s.layers; ++l) {
    const double* row = w.data() + static_cast<std::size_t>(l) * s.experts;
    const std::int64_t off = static_cast<std::int64_t>(l) * s.replicas;
    const std::int64_t* cur_row = cur_p2l + off;
    const std::int64_t cap = scratch_volume[l].matched;
    double total = 0;
    for (int e = 0; e < s.experts; ++e) total += row[e];
    const double mean = total / s.gpus;
    auto add_path = [&](std::vector<std::int64_t> start) {
      LayerPath lp;
      lp.start = std::move(start);
      // Steps that cost more than re-placing the layer from scratch never pay.
      lp.path = detail::search_layer({row, cur_row, lp.start.data(), cap}, s);
      const int index = static_cast<int>(paths[l].size());
      for (std::size_t k = 0; k < lp.path.copies.size(); ++k) {
        if (lp.path.copies[k] > cap) continue;
        menus[l].push_back({lp.path.copies[k], ratio(lp.path.max_load[k], mean)});
        sources[l].push_back({index, k});
      }
      paths[l].push_back(std::move(lp));
    };
    add_path(std::vector<std::int64_t>(cur_row, cur_row + s.replicas));
    const detail::LayerScore score =
        detail::score_layer(row, s.experts, scratch_p2l + off, s.replicas, s.gpus, scratch_count);
    // When the search ended near its split's floor, or the floor is above the
    // from-scratch plan, only other group -> node splits can do better.
    const double floor = detail::node_floor(row, cur_row, s);
    if (paths[l][0].path.max_load.back() <= floor * (1 + kAtFloor) || floor > score.max_gpu_load) {
      const std::int64_t dups =
          detail::score_layer(row, s.experts, cur_row, s.replicas, s.gpus, scratch_count)
              .duplicates;
      for (std::vector<std::int64_t>& start :
           detail::group_trade_starts(row, cur_row, s, kMaxGroupTrades)) {
        // A refill that the freed slots forced into same-GPU duplicates
        // would break the promise of no more duplicates than `current`.
        if (detail::score_layer(row, s.experts, start.data(), s.replicas, s.gpus, scratch_count)
                .duplicates <= dups)
          add_path(std::move(start));
      }
    }
    menus[l].push_back({cap, score.max_over_mean()});
    sources[l].push_back({-1, 0});
  }
  const std::vector<int> chosen = detail::allocate_budget(menus, budget, options.min_gain_per_copy);

  Tensor phy2log = Tensor::empty({s.layers, s.replicas}, DType::i64);
  std::int64_t* out = phy2log.data<std::int64_t>();
  std::int64_t copies = 0;
  for (int l = 0; l < s.layers; ++l) {
    const std::int64_t off = static_cast<std::int64_t>(l) * s.replicas;
    copies += menus[l][chosen[l]].copies;
    const Source src = sources[l][chosen[l]];
    if (src.path >= 0) {
      const LayerPath& lp = paths[l][src.path];
      detail::replay(lp.start.data(), lp.path, src.step, s.replicas, out + off);
    } else {
      std::copy(scratch_p2l + off, scratch_p2l + off + s.replicas, out + off);
    }
  }
  EPX_LOG(Debug, Balancer, "rebalance_experts (incremental): ", s.layers, " layers, ", copies,
          " expert copies of a budget of ", budget, " (", options.max_migration, " x ",
          scratch_copies, " from scratch)");
  // Replicas that stay keep their slot index (the most that can, as
  // match_slots does), whichever option a layer took.
  pair.target = phy2log.data<std::int64_t>();
  return detail::assemble(detail::match_phy2log(pair), s);
}

}  // namespace epx::balancer
