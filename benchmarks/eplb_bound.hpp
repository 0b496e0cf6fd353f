// A lower bound on the heaviest GPU's load that no placement can beat, for
// `epx-bench eplb`: how much of EPLB's imbalance any placement could remove.
#pragma once

#include <cstdint>

namespace epx::bench {

struct BalanceShape {
  int experts = 0, groups = 0, replicas = 0, nodes = 0, gpus = 0;
  bool hierarchical() const { return groups % nodes == 0; }
};

// load: one layer, [experts]. Returns max(a, b, c) / mean GPU load, where
//  a = the mean GPU load itself;
//  b = (hierarchical) the node holding the heaviest-bound group g also holds
//      groups/nodes - 1 others, at least the lightest ones, and spreads them
//      over gpus/nodes GPUs: (W_g + lightest others) / (gpus/nodes), max over g;
//      and, when the partitions of groups onto nodes are few enough to try
//      (branch and bound, at most 10^6 steps), the lightest possible heaviest
//      node / (gpus/nodes);
//  c = every expert of group g lives on one node with slots/node slots shared
//      with experts/node experts, so g's experts have at most
//      |g| + slots/node - experts/node slots; the smallest possible largest
//      load per replica within that many slots (found by giving each extra slot
//      to the largest load per replica, which is optimal) is carried by some
//      GPU. In global mode the "node" is the whole cluster and g all experts.
double placement_lower_bound(const double* load, const BalanceShape& shape);

}  // namespace epx::bench
