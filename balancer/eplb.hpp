// Policy::eplb: DeepSeek EPLB's placement, reproduced from its described
// semantics (float32 arithmetic, the same greedy choices and tie-breaks), so
// that phy2log matches EPLB's on every input.
#pragma once

#include <cstdint>
#include <vector>

#include "balancer/problem.hpp"

namespace epx::balancer::detail {

// Greedy packing of n items into num_packs packs of n / num_packs items each:
// items in descending weight (stable: equal weights keep index order), each
// into the lightest pack that is not full (lowest index on ties); with one
// item per pack, item i goes to pack i. Pack weights accumulate in float32.
struct Packing {
  std::vector<int> pack;          // [n] pack of each item
  std::vector<int> rank_in_pack;  // [n] order of arrival in its pack
};
Packing eplb_pack(const float* weight, int n, int num_packs);

// The group -> node packing EPLB uses in hierarchical mode (group loads summed
// in float32 in expert order); `balanced` starts from it too.
Packing eplb_groups_to_nodes(const float* layer_load, const Shape& shape);

// One layer: layer_load [E] in float32 -> phy2log [P].
void eplb_layer(const float* layer_load, const Shape& shape, std::int64_t* phy2log);

}  // namespace epx::balancer::detail
