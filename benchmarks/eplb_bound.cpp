#include "benchmarks/eplb_bound.hpp"

#include <algorithm>
#include <vector>

namespace epx::bench {

namespace {

// Smallest possible largest w[e] / count[e] with sum(count) = slots, count >= 1.
double min_max_per_replica(const double* w, int n, int slots) {
  std::vector<int> count(n, 1);
  for (int extra = slots - n; extra > 0; --extra) {
    int best = 0;
    for (int e = 1; e < n; ++e) {
      if (w[e] / count[e] > w[best] / count[best]) best = e;
    }
    ++count[best];
  }
  double worst = 0;
  for (int e = 0; e < n; ++e) worst = std::max(worst, w[e] / count[e]);
  return worst;
}

// The lightest possible heaviest node over all ways to put per_node groups on
// each node, by enumeration (each node filled in group order, empty nodes
// interchangeable); 0 when there are more than `limit` ways to look at.
class BestPartition {
 public:
  BestPartition(const std::vector<double>& group_load, int nodes, long limit)
      : load_(group_load),
        per_node_(static_cast<int>(group_load.size()) / nodes),
        node_load_(nodes, 0.0),
        node_count_(nodes, 0),
        limit_(limit) {}

  double run() {
    visit(0, 0.0);
    return visited_ > limit_ ? 0.0 : best_;
  }

 private:
  void visit(std::size_t g, double heaviest) {
    if (visited_ > limit_ || heaviest >= best_) return;  // over budget, or no better
    if (g == load_.size()) {
      ++visited_;
      best_ = heaviest;
      return;
    }
    bool tried_empty = false;
    for (std::size_t n = 0; n < node_load_.size(); ++n) {
      if (node_count_[n] == per_node_) continue;
      if (node_count_[n] == 0) {
        if (tried_empty) continue;  // another empty node is the same choice
        tried_empty = true;
      }
      node_load_[n] += load_[g];
      ++node_count_[n];
      ++visited_;
      visit(g + 1, std::max(heaviest, node_load_[n]));
      --node_count_[n];
      node_load_[n] -= load_[g];
    }
  }

  const std::vector<double>& load_;
  int per_node_;
  std::vector<double> node_load_;
  std::vector<int> node_count_;
  long limit_;
  long visited_ = 0;
  double best_ = 1e300;
};

}  // namespace

double placement_lower_bound(const double* load, const BalanceShape& s) {
  const int groups = s.hierarchical() ? s.groups : 1;
  const int nodes = s.hierarchical() ? s.nodes : 1;
  const int group_size = s.experts / groups;
  const int per_node = groups / nodes;
  const int gpus_per_node = s.gpus / nodes;
  const int extra_per_node = (s.replicas - s.experts) / nodes;

  double total = 0;
  std::vector<double> group_load(groups, 0.0);
  for (int e = 0; e < s.experts; ++e) {
    total += load[e];
    group_load[e / group_size] += load[e];
  }
  const double mean = total / s.gpus;
  if (mean <= 0) return 1.0;
  double bound = mean;

  // (b'): the best partition of groups onto nodes, when it is cheap to find
  // (DeepSeek-V3's 8 groups on 4 nodes: 105 partitions).
  if (per_node > 1) {
    const double best = BestPartition(group_load, nodes, 1000000).run();
    bound = std::max(bound, best / gpus_per_node);
  }

  std::vector<double> sorted = group_load;
  std::sort(sorted.begin(), sorted.end());
  for (int g = 0; g < groups; ++g) {
    // (b): group g plus the lightest per_node - 1 other groups.
    double node = group_load[g];
    int taken = 0;
    bool skipped_self = false;
    for (double x : sorted) {
      if (taken == per_node - 1) break;
      if (!skipped_self && x == group_load[g]) {
        skipped_self = true;
        continue;
      }
      node += x;
      ++taken;
    }
    bound = std::max(bound, node / gpus_per_node);
    // (c): g's experts in at most group_size + extra_per_node slots.
    bound = std::max(
        bound, min_max_per_replica(load + g * group_size, group_size, group_size + extra_per_node));
  }
  return bound / mean;
}

}  // namespace epx::bench
