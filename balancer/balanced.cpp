#include "balancer/balanced.hpp"

#include <algorithm>
#include <numeric>
#include <vector>

#include "balancer/eplb.hpp"
#include "balancer/group_moves.hpp"
#include "balancer/node_search.hpp"
#include "balancer/score.hpp"

namespace epx::balancer::detail {

namespace {

// Relative differences in GPU load below this are not worth a duplicate
// (and include rounding: sums of the same replica loads in another order).
// The node search uses the same threshold for progress.
constexpr double kNegligible = 1e-6;

// Groups to nodes (groups_per_node each) with the lightest heaviest node this
// finds: greedy by descending group load, then the best swap of a group on the
// heaviest node with one on a lighter node, while that lowers the heaviest.
std::vector<int> balance_groups(const double* layer_load, const Shape& shape) {
  const int groups = shape.used_groups();
  const int nodes = shape.used_nodes();
  const int per_node = groups / nodes;
  const int group_size = shape.experts / groups;
  std::vector<double> group_load(groups, 0.0);
  for (int g = 0; g < groups; ++g) {
    for (int j = 0; j < group_size; ++j) group_load[g] += layer_load[g * group_size + j];
  }
  std::vector<int> order(groups);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int a, int b) { return group_load[a] > group_load[b]; });
  std::vector<int> node_of(groups, -1);
  std::vector<double> node_load(nodes, 0.0);
  std::vector<int> node_groups(nodes, 0);
  for (int g : order) {
    int best = -1;
    for (int n = 0; n < nodes; ++n) {
      if (node_groups[n] < per_node && (best < 0 || node_load[n] < node_load[best])) best = n;
    }
    node_of[g] = best;
    ++node_groups[best];
    node_load[best] += group_load[g];
  }
  if (per_node == 1) return node_of;  // swaps only permute nodes

  const double tol = 1e-12 * (std::accumulate(node_load.begin(), node_load.end(), 0.0) + 1e-300);
  for (int step = 0; step < 4 * groups * groups; ++step)
    if (!trade_heaviest(node_of, group_load, node_load, tol)) break;
  return node_of;
}

// Whether two group -> node maps split the groups alike (node numbers aside).
bool same_partition(const std::vector<int>& a, const std::vector<int>& b) {
  for (std::size_t i = 0; i < a.size(); ++i) {
    for (std::size_t j = i + 1; j < a.size(); ++j) {
      if ((a[i] == a[j]) != (b[i] == b[j])) return false;
    }
  }
  return true;
}

// place_node on every node under a group -> node map; with `start` (a
// placement under the same map, e.g. EPLB's), each node's search also starts
// from it.
void place_all_nodes(const double* layer_load, const Shape& shape, const std::vector<int>& node_of,
                     const std::int64_t* start, std::int64_t* out) {
  const int nodes = shape.used_nodes();
  const int group_size = shape.experts / shape.used_groups();
  const int slots_per_node = shape.replicas / nodes;
  std::vector<std::vector<int>> experts(nodes);  // each node's logical experts
  std::vector<std::vector<double>> local_load(nodes);
  std::vector<NodeProblem> problem(nodes);
  double layer_bound = 0;
  for (int node = 0; node < nodes; ++node) {
    for (int g = 0; g < shape.used_groups(); ++g) {
      if (node_of[g] != node) continue;
      for (int j = 0; j < group_size; ++j) experts[node].push_back(g * group_size + j);
    }
    for (int e : experts[node]) local_load[node].push_back(layer_load[e]);
    problem[node] = NodeProblem{local_load[node].data(), static_cast<int>(experts[node].size()),
                                slots_per_node, shape.gpus / nodes};
    layer_bound = std::max(layer_bound, node_lower_bound(problem[node]));
  }
  // No node needs to be lighter than the layer's heaviest bound.
  std::vector<int> local_of(shape.experts, -1), local_start(slots_per_node);
  std::vector<std::vector<NodePlacement>> results(nodes);
  double layer_max = 0;  // the lightest heaviest GPU each node can give, at worst
  for (int node = 0; node < nodes; ++node) {
    problem[node].good_enough = layer_bound;
    if (start != nullptr) {
      for (std::size_t k = 0; k < experts[node].size(); ++k)
        local_of[experts[node][k]] = static_cast<int>(k);
      for (int i = 0; i < slots_per_node; ++i)
        local_start[i] = local_of[start[static_cast<std::int64_t>(node) * slots_per_node + i]];
      problem[node].start = local_start.data();
    }
    results[node] = place_node(problem[node]);
    double lightest = results[node][0].max_load;
    for (const NodePlacement& r : results[node]) lightest = std::min(lightest, r.max_load);
    layer_max = std::max(layer_max, lightest);
  }
  // Each node: the fewest duplicates among its results that keep the layer's
  // maximum, then the lighter.
  for (int node = 0; node < nodes; ++node) {
    const NodePlacement* pick = nullptr;
    for (const NodePlacement& r : results[node]) {
      if (r.max_load > layer_max * (1 + kNegligible)) continue;
      if (pick == nullptr || r.duplicates < pick->duplicates ||
          (r.duplicates == pick->duplicates && r.max_load < pick->max_load))
        pick = &r;
    }
    std::int64_t* slots = out + static_cast<std::int64_t>(node) * slots_per_node;
    for (int i = 0; i < slots_per_node; ++i) slots[i] = experts[node][pick->slots[i]];
  }
}

}  // namespace

void balanced_layer(const double* layer_load, const float* layer_load_f32, const Shape& shape,
                    const std::int64_t* eplb_phy2log, std::int64_t* out) {
  std::vector<int> scratch;
  const LayerScore eplb_score =
      score_layer(layer_load, shape.experts, eplb_phy2log, shape.replicas, shape.gpus, scratch);
  std::copy(eplb_phy2log, eplb_phy2log + shape.replicas, out);
  LayerScore best = eplb_score;

  auto consider = [&](const std::vector<int>& node_of, const std::int64_t* start) {
    std::vector<std::int64_t> candidate(shape.replicas);
    place_all_nodes(layer_load, shape, node_of, start, candidate.data());
    const LayerScore s = score_layer(layer_load, shape.experts, candidate.data(), shape.replicas,
                                     shape.gpus, scratch);
    // Never worse than EPLB on either count (exactly), and better than what
    // we have: lighter by more than kNegligible, or as light with fewer
    // duplicates.
    const double tol = kNegligible * best.max_gpu_load;
    const bool lighter = s.max_gpu_load < best.max_gpu_load - tol;
    const bool as_light = s.max_gpu_load <= best.max_gpu_load + tol;
    if (s.max_gpu_load <= eplb_score.max_gpu_load && s.duplicates <= eplb_score.duplicates &&
        (lighter || (as_light && s.duplicates < best.duplicates))) {
      best = s;
      std::copy(candidate.begin(), candidate.end(), out);
    }
  };

  const std::vector<int> eplb_nodes = eplb_groups_to_nodes(layer_load_f32, shape).pack;
  // Under EPLB's group -> node map, EPLB's own placement is a second start.
  consider(eplb_nodes, eplb_phy2log);
  const std::vector<int> own_nodes = balance_groups(layer_load, shape);
  if (!same_partition(own_nodes, eplb_nodes)) consider(own_nodes, nullptr);
}

}  // namespace epx::balancer::detail
