// How an incremental rebalance spends its copy budget over the layers: each
// layer offers options (a placement, the expert copies it needs, its max/mean
// GPU load); one option per layer is chosen so that the copies fit the
// budget and the layers' max/mean loads sum as low as this finds.
#pragma once

#include <cstdint>
#include <vector>

namespace epx::balancer::detail {

struct LayerOption {
  std::int64_t copies = 0;  // >= 0
  double ratio = 0;         // max/mean GPU load (lower is better)
};

// options[l]: layer l's options, options[l][0] with 0 copies (the current
// placement). Returns the chosen index per layer. Greedy on each layer's
// lower convex hull of (copies, ratio): hull segments in descending gain per
// copy, each taken when it fits what is left and gains at least
// min_gain_per_copy per copy (a layer whose segment did not fit takes no
// later one); then, layer by layer, the best option that what is left pays
// for. The result's copies never exceed `budget`; with a budget that pays for
// every layer's costliest option and min_gain_per_copy = 0, every layer gets
// its lowest ratio. Ties go to lower layers and lower indices: deterministic.
std::vector<int> allocate_budget(const std::vector<std::vector<LayerOption>>& options,
                                 std::int64_t budget, double min_gain_per_copy);

}  // namespace epx::balancer::detail
