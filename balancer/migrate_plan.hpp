// The pure half of weight migration (include/epx/balancer.hpp): checking a
// pair of placements, relabelling the target's slots within each GPU, and the
// list of expert copies that must cross between GPUs. Every rank computes the
// same plan from the same placements, so no plan is ever exchanged.
#pragma once

#include <cstdint>
#include <epx/balancer.hpp>
#include <vector>

namespace epx::balancer::detail {

// A current and a target placement, checked: same layers and experts, slot
// counts that are multiples of gpus, every expert with a replica in both.
struct PlacementPair {
  int layers = 0, experts = 0, gpus = 0;
  std::int64_t current_slots = 0, target_slots = 0;  // P of each
  const std::int64_t* current = nullptr;             // phy2log [L, current_slots]
  const std::int64_t* target = nullptr;              // phy2log [L, target_slots]
  std::int64_t current_per_gpu() const { return current_slots / gpus; }
  std::int64_t target_per_gpu() const { return target_slots / gpus; }
};

// p.phy2log checked as a host i64 [layers, P] of experts in [0, experts),
// every expert with a replica in every layer (InvalidArgument naming `op`,
// `name`, the index and the value); returns its data.
const std::int64_t* checked_phy2log(const char* op, const char* name, const Placement& p,
                                    std::int64_t layers, std::int64_t experts);

// InvalidArgument naming `op`, the argument and the value. The pair points
// into the placements, which must outlive it.
PlacementPair check_pair(const char* op, const Placement& current, const Placement& target,
                         int num_gpus);

// The target's phy2log [L, target_slots] relabelled as match_slots documents.
Tensor match_phy2log(const PlacementPair& pair);

// Per layer: slots a naive re-placement refills, and expert copies between GPUs.
std::vector<MigrationVolume> volume_per_layer(const PlacementPair& pair);

// One expert copy of one layer from GPU src (which holds it now) to GPU dst.
struct Transfer {
  int layer = 0;
  int expert = 0;
  int src = 0;
  int dst = 0;
};

// Every copy the target needs, ordered by layer, then dst, then expert. The
// source is a current holder of the expert, on dst's node when one is
// (node_of[g]: node of GPU g), else any; among those, the one that has sent
// fewest copies so far, ties to the first at or after dst in rank order.
std::vector<Transfer> plan_transfers(const PlacementPair& pair, const std::vector<int>& node_of);

}  // namespace epx::balancer::detail
