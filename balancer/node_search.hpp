// Policy::balanced inside one node (or the whole cluster in global mode): the
// node's experts, its slots and its GPUs are given; choose each expert's
// replica count and the GPU of every replica so that the heaviest GPU is as
// light as this search can make it, with no two replicas of one expert on one
// GPU unless the slot count forces it.
#pragma once

#include <cstdint>
#include <vector>

namespace epx::balancer::detail {

struct NodeProblem {
  const double* load = nullptr;  // [experts] in the node's local order
  int experts = 0;
  int slots = 0;  // a multiple of gpus, >= experts
  int gpus = 0;
  // The search stops once the heaviest GPU is this light (e.g. the bound of
  // another node of the same layer, which the layer cannot beat anyway).
  double good_enough = 0;
  // Optional: a placement to improve as well ([slots], local expert of each
  // slot, GPU-major; every expert at least once), e.g. EPLB's. The search
  // runs from it too, and that result is no heavier than this start.
  const int* start = nullptr;
};

struct NodePlacement {
  std::vector<int> slots;  // local expert of every slot, GPU-major, each GPU's ascending
  double max_load = 0;     // of the heaviest GPU
  std::int64_t duplicates = 0;
};

// A lower bound on the heaviest GPU of any placement of the node: the mean,
// and the smallest possible largest load per replica.
double node_lower_bound(const NodeProblem& problem);

// The search's results: from a fresh start (capped counts, greedy packing),
// then from `start` if given. GPU g owns slots [g * slots/gpus, (g+1) *
// slots/gpus). The caller chooses: which is better depends on the other nodes
// (a node lighter than the layer's heaviest should have fewer duplicates
// rather than a lighter heaviest GPU). Deterministic.
std::vector<NodePlacement> place_node(const NodeProblem& problem);

}  // namespace epx::balancer::detail
