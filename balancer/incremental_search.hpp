// The incremental rebalance's search within one layer: from a start placement
// (the current one, or one with a few nodes re-placed), change one or two
// slots at a time, always lightening the heaviest GPU, and record after each
// step how many expert copies the layer now needs (against the current
// placement) and how heavy its heaviest GPU is. The caller picks a prefix of
// this path per layer (budget.hpp), so every step is a point of a trade-off.
#pragma once

#include <cstdint>
#include <vector>

#include "balancer/problem.hpp"

namespace epx::balancer::detail {

struct SearchLayer {
  const double* load = nullptr;           // [E] this layer's expert loads
  const std::int64_t* current = nullptr;  // [P] the current placement (copies count against it)
  const std::int64_t* start = nullptr;    // [P] where the search starts (e.g. == current)
  std::int64_t max_copies = 0;            // stop once a step needs more copies than this
};

// One step: slot[k] gets expert[k], for the first `n` of the two.
struct SlotChange {
  int n = 0;
  int slot[2] = {0, 0};
  std::int64_t expert[2] = {0, 0};
};

struct SearchPath {
  std::vector<SlotChange> steps;
  // [steps + 1]: after 0, 1, ... steps. copies as migration_volume counts
  // them ((GPU, expert) pairs held after but not before); max_load: heaviest GPU.
  std::vector<std::int64_t> copies;
  std::vector<double> max_load;
};

// Moves keep the locality rule of `shape`: in hierarchical mode an expert only
// moves between GPUs of the node its group is on in `start` (which must keep
// the rule), so groups never change node. No step adds a second replica of an
// expert to a GPU, and every expert keeps at least one replica. Deterministic.
SearchPath search_layer(const SearchLayer& layer, const Shape& shape);

// start with the first `steps` changes of `path` applied, into out [P].
void replay(const std::int64_t* start, const SearchPath& path, std::size_t steps, int replicas,
            std::int64_t* out);

}  // namespace epx::balancer::detail
