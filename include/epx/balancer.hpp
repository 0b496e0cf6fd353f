// epx::balancer: expert placement. Given how many tokens each expert of each
// MoE layer received, decide how many replicas each expert gets and which GPU
// (rank) holds each replica, so that the busiest GPU is as close as possible
// to the average.
//
// Physical slots: num_replicas slots per layer, num_replicas / num_gpus per
// GPU; slot p lives on GPU p / (num_replicas / num_gpus), and GPUs are
// numbered node-major (GPU g is on node g / (num_gpus / num_nodes)).
//
// Locality: when num_groups % num_nodes == 0 the placement is hierarchical:
// every expert group (num_experts / num_groups consecutive experts) has all
// the replicas of all its experts on one node, and every node holds
// num_groups / num_nodes groups. Otherwise the placement is global (one node).
//
// The placement and routing functions are pure, single-threaded and
// deterministic; they run on host tensors and talk to no other rank. Only
// LoadTracker::end_step communicates.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include <epx/config.hpp>
#include <epx/group.hpp>
#include <epx/tensor.hpp>

namespace epx::balancer {

enum class Policy : std::uint8_t {
  // The default: never a higher max/mean GPU load than `eplb` on any layer and
  // never more same-GPU duplicate replicas; better replica counts, and packings
  // refined by local search (swaps between the heaviest and lighter GPUs,
  // replicas moved from one expert to another).
  balanced,
  // DeepSeek EPLB reproduced exactly (same phy2log on every input): greedy
  // replication by load per replica, greedy packing of groups to nodes and of
  // replicas to GPUs, in float32.
  eplb,
};

EPX_API const char* policy_name(Policy policy) noexcept;  // "balanced" or "eplb"

// A placement for L layers, E logical experts and P physical slots (i64).
struct Placement {
  Tensor phy2log;  // [L,P]: the logical expert held by each physical slot
  Tensor log2phy;  // [L,E,maxcnt]: each expert's slots, ascending, padded with -1
  Tensor logcnt;   // [L,E]: each expert's replica count (>= 1)
};

// load: [L,E] tokens per expert per layer, i64 or f32, finite and >= 0, on
// the host, L >= 1. num_replicas (P) >= E and a multiple of num_gpus;
// E a multiple of num_groups; num_gpus a multiple of num_nodes.
// Bad input throws epx::Error(InvalidArgument) naming the argument and value.
EPX_API Placement rebalance_experts(const Tensor& load, int num_replicas, int num_groups,
                                    int num_nodes, int num_gpus, Policy policy = Policy::balanced);

// How good a placement is, layer by layer. The load of a replica is its
// expert's load divided by the expert's replica count; a GPU's load is the sum
// over its slots.
struct PlacementQuality {
  // Max GPU load / mean GPU load (1 is perfect; 1 when a layer has no load).
  std::vector<double> gpu_max_over_mean;
  // Replicas that share a GPU with another replica of the same expert: per
  // GPU, its slot count minus the number of distinct experts it holds. Each
  // one is a slot that adds nothing a single replica would not.
  std::vector<std::int64_t> same_gpu_duplicates;
};

// Checks that `placement` fits `load` and num_gpus (InvalidArgument if not).
EPX_API PlacementQuality evaluate_placement(const Tensor& load, const Placement& placement,
                                            int num_gpus);

// Replica routing: which physical slot serves each (token, expert) pair of
// this rank. Pure and deterministic. For logical expert e, the candidates are
// e's replicas on this rank's node when there are any, else all of e's
// replicas; the n-th pair (in token order, then k order) that names e goes to
// candidate (rank + n) mod (number of candidates), so one rank spreads e's
// tokens evenly (counts differ by at most one) and ranks start at different
// replicas. A rank holds slots [rank * P/num_gpus, (rank+1) * P/num_gpus), and
// is on node rank / (num_gpus/num_nodes), as in rebalance_experts.
struct RoutingTarget {
  int layer = 0;      // row of the placement
  int rank = 0;       // this rank's GPU index, 0 <= rank < num_gpus
  int num_gpus = 0;   // the placement's GPUs (P a multiple of it)
  int num_nodes = 1;  // num_gpus a multiple of it
};

// topk_idx [T,K] i64 logical experts (-1: none) -> [T,K] i64 physical slots
// (-1 where topk_idx is -1). Bad input: InvalidArgument naming the value.
EPX_API Tensor route_to_replicas(const Tensor& topk_idx, const Placement& placement,
                                 const RoutingTarget& target);

// Live load statistics: each rank adds the token counts per expert it routed
// (e.g. Layout::num_tokens_per_expert of every MoE layer) during a step; the
// step's counts are summed over the group at end_step, and load() is the sum
// over the last `window` steps: the input of rebalance_experts, identical on
// every rank.
class EPX_API LoadTracker {
 public:
  // No communication. window >= 1 steps; timeout_s bounds end_step's wait.
  LoadTracker(Group group, int num_layers, int num_experts, int window, double timeout_s = 300);

  // Adds this rank's counts of one layer to the current step:
  // num_tokens_per_expert [num_experts] i32 or i64, >= 0, on the host. Bad
  // input throws InvalidArgument here and again, on every rank, at end_step.
  void add(int layer, const Tensor& num_tokens_per_expert);

  // Collective over the group: agrees on errors, sums the step's counts over
  // all ranks (a non-blocking reduction polled against timeout_s; Timeout if a
  // rank does not come, PeerFailure if the group was aborted), appends them to
  // the window (dropping the oldest step beyond it) and starts a new step. A
  // step that failed is dropped on every rank and the tracker stays usable.
  void end_step();

  Tensor load() const;  // [num_layers, num_experts] i64, a copy
  int steps() const;    // steps in the window, <= window

  struct State;  // opaque

 private:
  std::shared_ptr<State> state_;
};

}  // namespace epx::balancer
