// epx-train's engine: the DP x EP grid, the step loop (micro-batches,
// gradient sums, clipping, AdamW, bias update), evaluation, checkpoints and
// metrics. World rank r is data-parallel rank r; EP group g = r / ep holds
// every expert, rank r the experts [(r % ep) E/ep, (r % ep + 1) E/ep), or,
// with the balancer, the slots [(r % ep) P/ep, ...) of its placement.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <epx/comm.hpp>
#include <epx/group.hpp>

#include "model/engine.hpp"
#include "model/model.hpp"
#include "train/config.hpp"
#include "train/data.hpp"
#include "train/exchange.hpp"
#include "train/expert_balancer.hpp"

namespace epx::train {

struct StepResult {
  std::int64_t step = 0;
  double loss = 0;
  double lr = 0;
  double grad_norm = 0;
  double seconds = 0, ep_seconds = 0, dp_seconds = 0;
  double tokens_per_s = 0;
  std::vector<std::vector<std::int64_t>> expert_counts;  // [MoE layer][E], the global batch
  // The ranks' routed-expert work: (row, expert) pairs computed, max over
  // ranks / mean, and the slowest and the mean rank's seconds in expert GEMMs.
  double rank_pairs_max_over_mean = 0;
  double expert_seconds_max = 0, expert_seconds_mean = 0;
  std::vector<RebalanceReport> rebalances;  // the balancer's, at the end of this step
};

class Trainer {
 public:
  // Collective over `world`. Validates the config on every rank (one clear
  // error everywhere), builds the grid, and initialises the model: from a
  // checkpoint (resume: a step directory), from model.init_from, or randomly.
  Trainer(const Config& config, Group& world, const std::string& resume_dir = {});
  ~Trainer();

  std::int64_t step() const noexcept { return step_; }  // steps done
  StepResult train_step();
  double eval_loss();  // mean cross-entropy over eval_batches global batches of the val split
  // Writes checkpoint_dir/step-N atomically and points `latest` at it; returns the directory.
  std::string save_checkpoint();

  int rank() const noexcept { return rank_; }
  const Config& config() const noexcept { return config_; }
  model::Model& model() noexcept { return *model_; }
  std::int64_t global_batch() const noexcept { return global_batch_; }
  const TokenData& data() const noexcept { return *data_; }
  double timeout_s() const noexcept { return timeout_s_; }
  // The trainer's communicator over the world, for agreements and gathers.
  const Comm& world_comm() const noexcept { return world_comm_; }

 private:
  void load_checkpoint(const std::string& dir);
  model::ExpertSlots slots_of(int ep_rank) const;  // what EP rank `ep_rank` holds now
  void record_expert_work(StepResult& r) const;    // collective: the rank_* / expert_* fields
  void load_weights(const std::string& path, bool with_optimizer_dir);
  Config config_;
  Group& world_;
  int rank_ = 0, world_size_ = 1;
  double timeout_s_ = 300;
  std::int64_t global_batch_ = 0;
  std::int64_t step_ = 0;
  Comm world_comm_, ep_comm_, replica_comm_;
  std::unique_ptr<Group> ep_group_;
  std::unique_ptr<comm::Buffer> buffer_;
  std::unique_ptr<ExpertBalancer> balancer_;  // null: balancer.enabled false
  std::unique_ptr<model::Model> model_;
  std::unique_ptr<model::Engine> engine_;
  std::unique_ptr<TokenData> data_;
  std::vector<std::int32_t> inputs_, targets_;
};

}  // namespace epx::train
