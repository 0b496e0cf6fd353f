// Starts for the incremental search that trade whole groups between nodes.
// In hierarchical mode the search never moves an expert to another node, so
// when a drift makes one node heavier than its GPUs can share (the node's
// load / its GPUs is above what the layer needs), only a new group -> node
// split helps. Trading two groups costs the slots of both (every replica of
// them is new on its node), far less than re-placing the layer.
#pragma once

#include <cstdint>
#include <vector>

#include "balancer/problem.hpp"

namespace epx::balancer::detail {

// One trade of a group on the heaviest node (node_load's largest, first on
// ties) with a group on another node: the pair that lowers the larger of
// the two nodes' loads the most, below the heaviest's load - tol (ties to
// lower group indices), applied to node_of and node_load. False when none
// does. Used by Policy::balanced's group split too.
bool trade_heaviest(std::vector<int>& node_of, const std::vector<double>& group_load,
                    std::vector<double>& node_load, double tol);

// The heaviest node's load / GPUs per node under `placement` [P]'s group ->
// node split: no placement with that split has a lighter heaviest GPU.
double node_floor(const double* load, const std::int64_t* placement, const Shape& shape);

// Up to max_swaps placements [P] from `current` [P] (hierarchical shape):
// after 1, 2, ... greedy trades, each the trade of a group on the heaviest
// node with one on another node that lowers the larger of the two nodes' loads
// the most (ties to lower group indices). Groups that stay keep their slots;
// the groups that arrive on a node take the slots that the leaving ones
// freed: one replica per expert, further slots to the largest load per
// replica (at most one replica per GPU while possible), each replica in
// descending load onto the lightest GPU with a free slot that lacks its
// expert. Empty when no trade lowers the heaviest node. Deterministic.
std::vector<std::vector<std::int64_t>> group_trade_starts(const double* load,
                                                          const std::int64_t* current,
                                                          const Shape& shape, int max_swaps);

}  // namespace epx::balancer::detail
