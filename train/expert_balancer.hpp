// epx-train's live expert balancer: the closed loop DeepSeek trains with.
// Each step's expert loads go into a balancer::LoadTracker; every
// `balancer.every` steps the window's load gives a new placement of E + R
// slots per MoE layer over the EP group (balancer::rebalance_experts; every
// EP group plans from the same world-summed load, so all groups hold the
// same placement and a slot's data-parallel replicas stay the ranks with the
// same r % ep); the expert weights and both AdamW moments migrate to it
// (balancer::migrate_experts, slot matching first). Between rebalances the
// engine routes each (token, logical expert) to one replica
// (balancer::route_to_replicas), and the gradients of an expert's replicas
// are summed so that every replica takes the same AdamW update and the
// replicas stay bit-identical.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <epx/balancer.hpp>
#include <epx/group.hpp>

#include "model/model.hpp"
#include "train/config.hpp"
#include "train/exchange.hpp"

namespace epx::train {

// One rebalance, for metrics.jsonl and the report.
struct RebalanceReport {
  std::int64_t step = 0;
  // Per MoE layer, max/mean GPU load of the window's load under the
  // placement before, the one adopted, and plain EPLB's from scratch.
  std::vector<double> before, after, eplb;
  std::uint64_t moved_bytes = 0;  // rank 0's EP group's bytes received (weights and moments)
  std::uint64_t naive_bytes = 0;  // the same without slot matching
  double seconds = 0;             // planning and migration, this rank
  bool checked = false;           // EPX_TRAIN_CHECK_REPLICAS verified the replicas bit for bit
};

class ExpertBalancer {
 public:
  // Collective over `world` (the load tracker). ep_group / ep_comm: this
  // rank's EP group. Starts from the plan for a uniform load. Without
  // `moments` (serving: no optimizer) a rebalance moves the weights only.
  ExpertBalancer(const Config& config, Group& world, Group& ep_group, const Comm& ep_comm,
                 bool moments = true);

  const balancer::Placement& placement() const noexcept { return placement_; }
  // The nodes the placement is planned for: the EP groups' nodes when they
  // are equal blocks of consecutive ranks in every group (what the placement
  // assumes), else 1; the same on every rank.
  int num_nodes() const noexcept { return num_nodes_; }
  int num_slots() const noexcept { return num_slots_; }  // P = E + redundant_experts
  // The logical expert of each local slot of EP rank `ep_rank`.
  model::ExpertSlots slots_of(int ep_rank) const;

  // Collective over the world: adds this rank's step counts ([MoE layer][E])
  // to the tracker and closes the step.
  void observe(const std::vector<std::vector<std::int64_t>>& counts);
  bool due(std::int64_t step) const noexcept { return step % every_ == 0; }
  // Collective over the EP group: plans from the window, migrates the
  // experts (values, and exp_avg, exp_avg_sq with moments) of each model (the rank's
  // pipeline chunks, each holding some MoE layers) and adopts the new
  // placement.
  RebalanceReport rebalance(const std::vector<model::Model*>& models, std::int64_t step);

  // Collective over the EP group, after the data-parallel sums: every
  // replica's gradient := the sum of all the expert's replica gradients in
  // slot order, computed once by the expert's first holder and sent to the
  // others (the same bits everywhere).
  void sum_replica_gradients(model::Model& model) const;
  // The experts' squared gradient norm on this rank counting each logical
  // expert once (at its first slot), for the global norm.
  double grad_sq_sum(const model::Model& model) const;

 private:
  int first_slot(int moe, int expert) const;  // of the placement
  model::ExpertSlots slots_of(const balancer::Placement& placement, int ep_rank) const;
  Group& ep_group_;
  const Comm& ep_comm_;
  balancer::LoadTracker tracker_;
  balancer::Policy policy_;  // from scratch; the first plan with incremental
  bool incremental_ = false;
  balancer::IncrementalOptions incremental_options_;
  balancer::Placement placement_;
  int num_slots_ = 0, num_groups_ = 1, num_nodes_ = 1, every_ = 1;
  bool moments_ = true;
  double timeout_s_ = 300;
};

}  // namespace epx::train
