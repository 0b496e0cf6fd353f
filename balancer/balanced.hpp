// Policy::balanced for one layer: candidate placements from place_node under
// EPLB's group -> node assignment and under a better balanced one, kept only
// when no worse than EPLB's own placement (max GPU load, then duplicates).
#pragma once

#include <cstdint>

#include "balancer/problem.hpp"

namespace epx::balancer::detail {

// layer_load in double (what quality is measured in) and float32 (what EPLB
// computes in); eplb_phy2log: EPLB's placement of this layer [P]; out [P].
void balanced_layer(const double* layer_load, const float* layer_load_f32, const Shape& shape,
                    const std::int64_t* eplb_phy2log, std::int64_t* out);

}  // namespace epx::balancer::detail
