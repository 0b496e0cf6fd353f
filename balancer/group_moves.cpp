#include "balancer/group_moves.hpp"

#include <algorithm>
#include <numeric>

namespace epx::balancer::detail {

namespace {

// Node loads must drop by more than this fraction of the mean node load for
// a trade to count (smaller is rounding).
constexpr double kProgress = 1e-6;

struct Split {
  std::vector<int> node_of;       // [groups]
  std::vector<double> node_load;  // [nodes]
};

Split split_of(const double* load, const std::int64_t* placement, const Shape& s,
               std::vector<double>& group_load) {
  const int group_size = s.experts / s.groups, slots_per_node = s.replicas / s.nodes;
  group_load.assign(s.groups, 0.0);
  for (int e = 0; e < s.experts; ++e) group_load[e / group_size] += load[e];
  Split out;
  out.node_of.assign(s.groups, 0);
  for (int p = 0; p < s.replicas; ++p) out.node_of[placement[p] / group_size] = p / slots_per_node;
  out.node_load.assign(s.nodes, 0.0);
  for (int g = 0; g < s.groups; ++g) out.node_load[out.node_of[g]] += group_load[g];
  return out;
}

// `current` with the groups of node_of that changed node refilled as the
// header says.
std::vector<std::int64_t> refill(const double* load, const std::int64_t* current, const Shape& s,
                                 const std::vector<int>& was, const std::vector<int>& now) {
  const int group_size = s.experts / s.groups, slots_per_node = s.replicas / s.nodes;
  const int gpus_per_node = s.gpus / s.nodes, per_gpu = s.slots_per_gpu();
  std::vector<std::int64_t> out(current, current + s.replicas);
  std::vector<int> count(s.experts, 0);
  for (int p = 0; p < s.replicas; ++p) ++count[current[p]];
  for (int n = 0; n < s.nodes; ++n) {
    std::vector<int> arriving;  // experts, ascending
    for (int g = 0; g < s.groups; ++g) {
      if (now[g] != n || was[g] == n) continue;
      for (int j = 0; j < group_size; ++j) arriving.push_back(g * group_size + j);
    }
    if (arriving.empty()) continue;
    const int first = n * slots_per_node;
    std::vector<int> free_slots;
    std::vector<double> gpu_load(gpus_per_node, 0.0);
    std::vector<std::vector<char>> holds(gpus_per_node, std::vector<char>(arriving.size(), 0));
    for (int p = first; p < first + slots_per_node; ++p) {
      const std::int64_t e = current[p];
      if (now[e / group_size] == n)
        gpu_load[(p - first) / per_gpu] += load[e] / count[e];
      else
        free_slots.push_back(p);
    }
    // Replica counts: one each, then the largest load per replica, capped at
    // one per GPU while some expert is under the cap.
    std::vector<int> reps(arriving.size(), 1);
    for (std::size_t extra = arriving.size(); extra < free_slots.size(); ++extra) {
      int best = -1;
      for (int pass = 0; pass < 2 && best < 0; ++pass) {
        for (std::size_t k = 0; k < arriving.size(); ++k) {
          if (pass == 0 && reps[k] >= gpus_per_node) continue;
          if (best < 0 || load[arriving[k]] / reps[k] > load[arriving[best]] / reps[best])
            best = static_cast<int>(k);
        }
      }
      ++reps[best];
    }
    std::vector<int> order;  // replicas as indices into arriving, heaviest first
    for (std::size_t k = 0; k < arriving.size(); ++k)
      order.insert(order.end(), static_cast<std::size_t>(reps[k]), static_cast<int>(k));
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
      return load[arriving[a]] / reps[a] > load[arriving[b]] / reps[b];
    });
    std::vector<int> free_on(gpus_per_node, 0);
    for (const int p : free_slots) ++free_on[(p - first) / per_gpu];
    std::vector<char> used(free_slots.size(), 0);
    for (const int k : order) {
      int pick = -1;
      for (int g = 0; g < gpus_per_node; ++g) {
        if (free_on[g] == 0) continue;
        if (pick < 0 ||
            (holds[g][k] != holds[pick][k] ? !holds[g][k] : gpu_load[g] < gpu_load[pick]))
          pick = g;
      }
      std::size_t i = 0;
      while (used[i] || (free_slots[i] - first) / per_gpu != pick) ++i;
      used[i] = 1;
      out[free_slots[i]] = arriving[k];
      --free_on[pick];
      holds[pick][k] = 1;
      gpu_load[pick] += load[arriving[k]] / reps[k];
    }
  }
  return out;
}

}  // namespace

bool trade_heaviest(std::vector<int>& node_of, const std::vector<double>& group_load,
                    std::vector<double>& node_load, double tol) {
  const int groups = static_cast<int>(node_of.size());
  const int h =
      static_cast<int>(std::max_element(node_load.begin(), node_load.end()) - node_load.begin());
  double best = node_load[h] - tol;
  int bu = -1, bv = -1;
  for (int u = 0; u < groups; ++u) {
    if (node_of[u] != h) continue;
    for (int v = 0; v < groups; ++v) {
      const int o = node_of[v];
      if (o == h) continue;
      const double d = group_load[u] - group_load[v];
      const double pair_max = std::max(node_load[h] - d, node_load[o] + d);
      if (pair_max < best) {
        best = pair_max;
        bu = u;
        bv = v;
      }
    }
  }
  if (bu < 0) return false;
  const int o = node_of[bv];
  const double d = group_load[bu] - group_load[bv];
  node_load[h] -= d;
  node_load[o] += d;
  std::swap(node_of[bu], node_of[bv]);
  return true;
}

double node_floor(const double* load, const std::int64_t* placement, const Shape& s) {
  if (!s.hierarchical) return 0;
  std::vector<double> group_load;
  const Split split = split_of(load, placement, s, group_load);
  return *std::max_element(split.node_load.begin(), split.node_load.end()) / (s.gpus / s.nodes);
}

std::vector<std::vector<std::int64_t>> group_trade_starts(const double* load,
                                                          const std::int64_t* current,
                                                          const Shape& s, int max_swaps) {
  std::vector<std::vector<std::int64_t>> out;
  if (!s.hierarchical || s.nodes < 2) return out;
  std::vector<double> group_load;
  Split split = split_of(load, current, s, group_load);
  const std::vector<int> was = split.node_of;
  const double tol =
      kProgress * std::accumulate(split.node_load.begin(), split.node_load.end(), 0.0) / s.nodes;
  for (int t = 0; t < max_swaps; ++t) {
    if (!trade_heaviest(split.node_of, group_load, split.node_load, tol)) break;
    out.push_back(refill(load, current, s, was, split.node_of));
  }
  return out;
}

}  // namespace epx::balancer::detail
