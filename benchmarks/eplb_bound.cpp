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
