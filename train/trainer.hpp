// epx-train's engine: the PP x DP x EP grid, the step loop (micro-batches or
// a pipeline schedule, gradient sums, clipping, AdamW, bias update, the live
// balancer), evaluation, checkpoints and metrics. World rank r is pipeline
// rank r / dp and data-parallel rank d = r % dp; the EP groups are ep
// consecutive dp ranks of a stage, rank r holding the experts
// [(d % ep) E/ep, (d % ep + 1) E/ep) of its stage's layers, or, with the
// balancer, the slots [(d % ep) P/ep, ...) of the placement (docs/train.md).
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
#include "train/pipeline_stage.hpp"
#include "train/pipeline_timeline.hpp"

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
  // ranks / mean within each pipeline stage (the worst stage's), and the
  // slowest and the mean rank's seconds in expert GEMMs.
  double rank_pairs_max_over_mean = 0;
  double expert_seconds_max = 0, expert_seconds_mean = 0;
  std::vector<RebalanceReport> rebalances;  // the balancer's, at the end of this step
  // pp > 1: the executor's wall time for the schedule, the part of it this
  // rank's ops ran (the rest is bubble), and those ops' totals by kind per
  // local chunk (an FB unit on its forward half's).
  double pipeline_seconds = 0, ops_seconds = 0;
  std::vector<OpTotals> chunk_ops;
  int pipeline_rank = 0;            // this rank's place in its pipeline (schedule.ops' index)
  int pipeline_index = 0;           // which pipeline (its dp rank)
  pipeline::ExecutorStats executor;        // where the executor's step went
  std::vector<pipeline::OpTime> op_times;  // this rank's ops (ms, the host's steady clock)
  // log.timeline's step (rank 0): the file written and the makespans.
  std::string timeline;
  double timeline_measured_ms = 0, timeline_simulated_ms = 0;
  double timeline_replayed_ms = 0, timeline_handoff_ms = 0;  // see TimelineReport
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
  // The mean cross-entropy over eval_batches global batches of the val split.
  double eval_loss();
  // The pipeline's schedule (pp > 1), else null.
  const pipeline::Schedule* schedule() const noexcept { return schedule_.get(); }
  // Whether DualPipe's FB units overlap their halves (parallel.fb_overlap,
  // taken only with ep > 1 and MPI_THREAD_MULTIPLE).
  bool fb_overlapped() const noexcept;
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
  std::int64_t expert_pairs() const;               // over the chunks' engines
  double expert_seconds() const;
  // Micro-batch mb of this dp rank's share of a global batch into tokens and
  // targets ([micro_batch_size x seq_len] each): of the train split's batch
  // for step `index` (val false), or of the val split's batch `index`.
  void fill_micro_batch(bool val, std::int64_t index, int mb, std::int32_t* tokens,
                        std::int32_t* targets) const;
  StepResult train_step_pipeline();  // pp > 1 (train/pipeline_step.cpp)
  double eval_loss_pipeline();
  void draw_timeline(StepResult& r);  // collective over the pipeline
  // pp > 1: does local chunk `chunk` hold the first copy of its stage (in
  // (rank, chunk) order)? DualPipe's second copies are not counted twice.
  bool first_copy_of_stage(int chunk) const;
  // Clipping, AdamW and the bias update on every chunk; sets r.grad_norm and r.lr.
  void update(StepResult& r, double grad_sq, std::int64_t t);
  // The balancer's end of a step: load statistics, a due rebalance, checks.
  void balance(StepResult& r, std::int64_t t);
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
  std::unique_ptr<comm::Buffer> second_buffer_;  // chunk 1's, with parallel.fb_overlap
  std::unique_ptr<ExpertBalancer> balancer_;  // null: balancer.enabled false
  // One model part and engine per local pipeline chunk (one without pp).
  std::vector<std::unique_ptr<model::Model>> models_;
  std::vector<std::unique_ptr<model::Engine>> engines_;
  model::Model* model_ = nullptr;    // chunk 0
  model::Engine* engine_ = nullptr;  // chunk 0
  int stage_rank_ = 0, dp_rank_ = 0;
  Comm pp_comm_;                     // pp > 1: this rank's pipeline, for evaluation
  Comm stage_comm_;                  // the dp ranks of this pipeline rank: the dense gradient sums
  std::unique_ptr<Group> pp_group_;  // pp > 1: this rank's pipeline
  std::unique_ptr<pipeline::Schedule> schedule_;
  std::unique_ptr<PipelineStage> stage_;
  std::unique_ptr<pipeline::Executor> executor_;
  std::vector<std::vector<std::int32_t>> mb_tokens_, mb_targets_;  // pp: this step's micro-batches
  std::unique_ptr<TokenData> data_;
  std::vector<std::int32_t> inputs_, targets_;
};

}  // namespace epx::train
