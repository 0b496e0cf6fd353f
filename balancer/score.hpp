// The quality of one layer's placement, computed one way for every caller
// (the policies' choices, evaluate_placement, tests and benchmarks), so that
// "balanced is never worse than eplb" compares like with like.
#pragma once

#include <cstdint>
#include <vector>

namespace epx::balancer::detail {

struct LayerScore {
  double max_gpu_load = 0;
  double mean_gpu_load = 0;
  std::int64_t duplicates = 0;  // same-GPU duplicate replicas

  double max_over_mean() const { return mean_gpu_load > 0 ? max_gpu_load / mean_gpu_load : 1.0; }
};

// load [experts] in double, phy2log [replicas] (every value a valid expert).
// `count` is scratch space, resized as needed.
LayerScore score_layer(const double* load, int experts, const std::int64_t* phy2log, int replicas,
                       int gpus, std::vector<int>& count);

}  // namespace epx::balancer::detail
