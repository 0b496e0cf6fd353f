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
// LoadTracker::end_step and migrate_experts communicate.
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

// --- Incremental rebalance ---------------------------------------------------
//
// A rebalance that knows the current placement and counts what adopting the
// result would migrate: it starts from `current` and changes replicas only
// where that buys balance for the bytes. Copies are counted as
// migration_volume counts `matched`: a (layer, GPU, expert) with the expert in
// the GPU's new slots and in none of its current ones.
//
// The budget is relative to a from-scratch re-placement: S copies = the
// `matched` volume of rebalance_experts(load, P, ..., Policy::balanced) after
// `current` (which is what migrate_experts would move to adopt it). The
// result needs at most floor(max_migration * S) copies over all layers.
struct IncrementalOptions {
  // In [0, 1]. 0 moves nothing (0 copies; the current placement, unless one
  // that needs no copy is better); 1 allows as many copies as from scratch,
  // and then (with min_gain_per_copy = 0) every layer's max GPU load is no
  // higher than the from-scratch placement's.
  double max_migration = 0.25;
  // >= 0: the least drop in a layer's max/mean GPU load that one expert copy
  // must buy; changes that gain less per copy are not made even within the
  // budget (0: the budget alone limits).
  double min_gain_per_copy = 0;
};

// load as above; current: the placement in use (phy2log [L,P] read only:
// experts in [0,E), every expert with a replica in every layer; in
// hierarchical mode every group's replicas on one node, groups/nodes groups
// per node). The result has the same P (a different P is not supported: give
// it to rebalance_experts and migrate from scratch) and the same locality
// rule, every expert with >= 1 replica, per layer no more same-GPU
// duplicates than `current` or the from-scratch placement has, and a max GPU
// load no higher than `current` has under `load` (here and above: up to the
// rounding of GPU sums taken in another order). Replicas that stay keep their
// slot index (the result is slot-matched to `current`, as match_slots does).
// Pure and deterministic.
//
// Per layer the options are: the points of a local search from `current`
// (each step lightens the heaviest GPU by a swap of two replicas or by giving
// one slot to another expert, whichever takes the most load off it per copy;
// experts stay on their node); when that search ends at the floor of its
// group -> node split, the same search after one or two trades of whole
// groups between nodes (which cost the slots of both groups); and the
// from-scratch placement. The budget goes to the layers and steps with the
// largest gain in max/mean per copy first. InvalidArgument (naming the
// argument and the value) for a bad load, shape, current placement or option,
// as rebalance_experts.
EPX_API Placement rebalance_experts(const Tensor& load, const Placement& current, int num_groups,
                                    int num_nodes, int num_gpus,
                                    const IncrementalOptions& options = {});

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
//
// To dispatch to the replicas, give the result to comm::Buffer as topk_idx
// with num_experts = P (the placement's slots) and one rank per GPU: the
// Buffer sends slot p to rank p / (P/R), which is the GPU that holds it, and
// the receiver's local expert ids are its local slots (p - rank * P/R), the
// index into migrate_experts' weights[layer].
EPX_API Tensor route_to_replicas(const Tensor& topk_idx, const Placement& placement,
                                 const RoutingTarget& target);

// Live load statistics: each rank adds the token counts per expert it routed
// (e.g. Layout::num_tokens_per_expert of every MoE layer) during a step; the
// step's counts are summed over the group at end_step, and load() is the sum
// over the last `window` steps: the input of rebalance_experts, identical on
// every rank.
class EPX_API LoadTracker {
 public:
  // No communication. window >= 1 steps; timeout_s bounds end_step's wait
  // (0: EPX_TIMEOUT_S, as everywhere in epx).
  LoadTracker(Group group, int num_layers, int num_experts, int window, double timeout_s = 0);

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

// --- Weight migration -------------------------------------------------------
//
// Adopting a new placement moves expert weights (and whatever else lives per
// slot: optimizer moments, ...) to the GPUs that hold the new replicas. Two
// steps, both deterministic so that every rank computes the same plan:
//   1. match_slots relabels the target's slots *within each GPU* so that a
//      replica of expert e already on GPU g keeps its local slot index (EPLB
//      and rebalance_experts ignore where replicas are now). Which experts each
//      GPU holds does not change, so balance and locality are those of the
//      target; only slot indices do.
//   2. migrate_experts moves only what must move: GPU g receives expert e once
//      when e is in g's new slots but in none of its current ones, from a rank
//      that holds e now (on g's node when one there does; among those, the one
//      that has sent fewest copies so far). A second replica of e on g is a
//      local copy; a replica that only changes slot index is not copied.
//
// Local slot i of GPU g is physical slot g * (P / num_gpus) + i. Placements
// may differ in P (more or fewer redundant slots); E must be the same.

// The tensors of one physical slot, e.g. {w1, w2, w3, adam_m, adam_v}.
// Within one layer every slot has the same number of tensors, and tensor j
// has the same shape and dtype in every slot of every rank.
using SlotTensors = std::vector<Tensor>;

// Pure. target with its slots relabelled within each GPU: for local slot
// indices i < min(S_current, S_target) of GPU g, the current expert of slot i
// stays there when the target gives g a replica of it that is not yet placed
// (ascending i; this keeps the most replicas where they are), and the other
// target replicas of g fill the remaining slots in their target order.
// current and target: from rebalance_experts (same L and E, P a multiple of
// num_gpus). InvalidArgument on bad input.
EPX_API Placement match_slots(const Placement& current, const Placement& target, int num_gpus);

// Expert copies that adopting `target` after `current` moves, over all
// layers; multiply by an expert's bytes. Pure; checks as match_slots.
struct MigrationVolume {
  // Slots (g, i) whose expert changes when `target` is adopted as is: a
  // naive re-placement refills each of them (i >= S_current counts too).
  std::int64_t naive = 0;
  // (layer, GPU, expert) with the expert in the GPU's target slots and in none
  // of its current ones: what migrate_experts sends between ranks. Never more
  // than `naive` of match_slots(current, target) or of target itself.
  std::int64_t matched = 0;
};
EPX_API MigrationVolume migration_volume(const Placement& current, const Placement& target,
                                         int num_gpus);

struct MigrationStats {
  std::uint64_t bytes_sent = 0;            // this rank, to other ranks
  std::uint64_t bytes_received = 0;        // this rank, from other ranks
  std::uint64_t internode_bytes_sent = 0;  // this rank, to ranks of other nodes
  std::uint64_t moved_bytes = 0;           // whole group: sum of bytes_received over ranks
  std::uint64_t naive_bytes = 0;           // whole group: MigrationVolume::naive in bytes
};

struct Migration {
  // match_slots(current, target, group.size()): the placement to route with
  // from now on (the target as given would send tokens to the wrong slots).
  Placement placement;
  // [layer][local slot] under `placement`. A slot whose replica stayed keeps
  // the very Tensor objects passed in (no copy); received and locally copied
  // replicas are new host tensors owned by the caller from now on.
  std::vector<std::vector<SlotTensors>> weights;
  MigrationStats stats;
};

// Collective over `group` (rank r = GPU r; nodes as the group sees them).
// weights: [layer][local slot] under `current`, S_current = P_current /
// group.size() slots per layer, host tensors. Taken by value: what this rank
// no longer holds is released when the caller drops its own references.
// Bad input on any rank (shapes, placements that differ between ranks, an
// expert without a current replica) throws InvalidArgument on every rank
// before any data moves. Every wait is bounded by timeout_s (0: EPX_TIMEOUT_S): a peer that does
// not send or receive gives Timeout naming it and aborts the group (PeerFailure
// if it was aborted already). Messages are MPI point-to-point on group.comm()
// with one tag (0x6d67), in an order both sides derive from the plan.
EPX_API Migration migrate_experts(Group& group, const Placement& current, const Placement& target,
                                  std::vector<std::vector<SlotTensors>> weights,
                                  double timeout_s = 0);

}  // namespace epx::balancer
