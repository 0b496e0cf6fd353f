// epx-eplb's file formats: the load statistics it reads and the placement it
// writes, as JSON (nlohmann::json).
#pragma once

#include <string>

#include <epx/balancer.hpp>

namespace epx::launch {

// {"weight": [[...], ...]}: one row per layer, one number per expert. Integer
// rows become an i64 tensor, rows with any fraction an f32 one. Throws
// std::runtime_error with a one-line message naming what is wrong.
Tensor parse_load_json(const std::string& text);

// {"phy2log", "log2phy", "logcnt", "gpu_max_over_mean", "same_gpu_duplicates",
//  "policy"}, on one line.
std::string placement_json(const balancer::Placement& placement,
                           const balancer::PlacementQuality& quality, balancer::Policy policy);

}  // namespace epx::launch
