#include "balancer/score.hpp"

#include <algorithm>

namespace epx::balancer::detail {

LayerScore score_layer(const double* load, int experts, const std::int64_t* phy2log, int replicas,
                       int gpus, std::vector<int>& count) {
  count.assign(experts, 0);
  for (int p = 0; p < replicas; ++p) ++count[phy2log[p]];
  const int slots_per_gpu = replicas / gpus;
  LayerScore s;
  for (int g = 0; g < gpus; ++g) {
    const std::int64_t* slot = phy2log + static_cast<std::int64_t>(g) * slots_per_gpu;
    double gpu_load = 0;
    for (int i = 0; i < slots_per_gpu; ++i) {
      gpu_load += load[slot[i]] / count[slot[i]];
      // A duplicate is a slot whose expert already appeared earlier on this GPU.
      if (std::find(slot, slot + i, slot[i]) != slot + i) ++s.duplicates;
    }
    s.max_gpu_load = std::max(s.max_gpu_load, gpu_load);
  }
  // The mean from the expert loads, not from the GPU sums: the same value for
  // every placement of this layer, so ratios compare as the maxima do.
  double total = 0;
  for (int e = 0; e < experts; ++e) total += load[e];
  s.mean_gpu_load = total / gpus;
  return s;
}

}  // namespace epx::balancer::detail
