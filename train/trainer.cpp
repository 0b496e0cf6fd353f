#include "train/trainer.hpp"

#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include <epx/model_kernels.hpp>

#include "core/check.hpp"
#include "core/config.hpp"
#include "core/log.hpp"
#include "core/stopwatch.hpp"
#include "train/faults.hpp"
#include "train/optimizer.hpp"
#include "train/replica_check.hpp"

namespace epx::train {

namespace {
// Whether the schedule has FB units (DualPipe, DualPipeV).
bool has_fb_units(const pipeline::Schedule& s) {
  for (const auto& ops : s.ops)
    for (const pipeline::Op& op : ops)
      if (op.kind == pipeline::OpKind::FB) return true;
  return false;
}

using Clock = core::SteadyClock;
using core::seconds_since;

// Receive space for one MoE layer's calls of one micro-batch: at most every
// token to every rank of the EP group, as f32 rows of H (+ K in the backward).
std::size_t buffer_bytes(const Config& c) {
  const std::size_t T = static_cast<std::size_t>(c.train.micro_batch_size) * c.train.seq_len;
  const std::size_t rows = T * static_cast<std::size_t>(c.parallel.ep);
  const std::size_t cols = static_cast<std::size_t>(c.model.hidden_size + c.model.top_k);
  return std::max<std::size_t>(std::size_t{8} << 20, 3 * rows * cols * sizeof(float) + (1u << 20));
}

}  // namespace

Trainer::Trainer(const Config& config, Group& world, const std::string& resume_dir)
    : config_(config), world_(world) {
  rank_ = world.rank();
  world_size_ = world.size();
  timeout_s_ = core::params::timeout_s.get();
  world_comm_ = Comm(world.comm(), timeout_s_);

  // Every check before any work; one verdict for all ranks.
  std::string error;
  try {
    validate(config_, world_size_);
    data_ = std::make_unique<TokenData>(config_.data, config_.model.vocab_size);
  } catch (const std::exception& e) {
    error = e.what();
  }
  agree(world_comm_, error, "epx-train: checking the config");

  const ParallelConfig& par = config_.parallel;
  const TrainConfig& tc = config_.train;
  global_batch_ = static_cast<std::int64_t>(tc.micro_batch_size) * tc.num_micro_batches * par.dp;
  kernels::set_num_threads(tc.threads);

  // The grid (docs/train.md): world rank r is pipeline rank s = r / dp and
  // data-parallel rank d = r % dp of it; EP groups are ep consecutive ranks
  // of a stage's dp ranks; an expert's data-parallel replicas are the
  // stage's ranks with the same d % ep; a pipeline is the ranks of one d.
  stage_rank_ = rank_ / par.dp;
  dp_rank_ = rank_ % par.dp;
  ep_group_ = std::make_unique<Group>(
      world.split(stage_rank_ * (par.dp / par.ep) + dp_rank_ / par.ep, rank_));
  ep_comm_ = Comm(ep_group_->comm(), timeout_s_);
  const auto split = [&](int color) {
    MPI_Comm c = MPI_COMM_NULL;
    MPI_Comm_split(world_comm_.get(), color, rank_, &c);
    Comm out(c, timeout_s_);
    MPI_Comm_free(&c);
    return out;
  };
  replica_comm_ = split(stage_rank_ * par.ep + dp_rank_ % par.ep);
  stage_comm_ = split(stage_rank_);

  comm::BufferOptions bo;
  bo.num_bytes = buffer_bytes(config_);
  buffer_ = std::make_unique<comm::Buffer>(*ep_group_, bo);
  if (config_.balancer.enabled)
    balancer_ = std::make_unique<ExpertBalancer>(config_, world, *ep_group_, ep_comm_);
  model::EngineOptions eo;
  eo.fp8_dispatch = par.fp8_dispatch;
  std::vector<model::StagePart> parts{model::StagePart{}};
  if (par.pp > 1) {
    pp_group_ = std::make_unique<Group>(world.split(dp_rank_, stage_rank_));
    pp_comm_ = Comm(pp_group_->comm(), timeout_s_);
    pipeline::Schedule schedule = make_pipeline_schedule(config_);
    parts.clear();
    for (const int stage : schedule.stage_of[static_cast<std::size_t>(stage_rank_)])
      parts.push_back(
          stage_part(config_.model, config_.parallel.layers_per_stage, stage, schedule.stages));
    schedule_ = std::make_unique<pipeline::Schedule>(std::move(schedule));
  }
  // The FB overlap runs a rank's two chunks on two threads at once: each
  // chunk gets a Buffer of its own (every rank of the EP group makes the
  // same calls on each in the same order), and MPI must allow the threads.
  // With ep 1 there is no all-to-all to hide, only the threads' hand-offs
  // (measured 0.89x on 2 ranks), so it stays off.
  bool fb_overlap = par.pp > 1 && par.ep > 1 && par.fb_overlap && parts.size() == 2 &&
                    schedule_ && has_fb_units(*schedule_);
  if (fb_overlap) {
    int provided = MPI_THREAD_SINGLE;
    MPI_Query_thread(&provided);
    if (provided < MPI_THREAD_MULTIPLE) {
      EPX_LOG(Warn, Pipeline,
              "parallel.fb_overlap: MPI was started without MPI_THREAD_MULTIPLE, "
              "so the FB units run their halves one after the other");
      fb_overlap = false;
    } else {
      second_buffer_ = std::make_unique<comm::Buffer>(*ep_group_, bo);
    }
  }
  for (const model::StagePart& part : parts) {
    models_.push_back(std::make_unique<model::Model>(config_.model, dp_rank_ % par.ep, par.ep,
                                                     slots_of(dp_rank_ % par.ep), part));
    comm::Buffer& b = fb_overlap && engines_.size() == 1 ? *second_buffer_ : *buffer_;
    engines_.push_back(std::make_unique<model::Engine>(*models_.back(), b, eo));
  }
  model_ = models_.front().get();
  engine_ = engines_.front().get();
  if (balancer_)
    for (auto& e : engines_) e->set_placement(&balancer_->placement(), balancer_->num_nodes());
  if (par.pp > 1) {
    std::vector<model::Engine*> chunks;
    for (auto& e : engines_) chunks.push_back(e.get());
    stage_ = std::make_unique<PipelineStage>(chunks, tc.micro_batch_size, tc.seq_len, fb_overlap);
    pipeline::ExecutorOptions xo;
    xo.activation_shape = {static_cast<std::int64_t>(tc.micro_batch_size) * tc.seq_len,
                           config_.model.hidden_size};
    xo.timeout_s = timeout_s_;
    executor_ = std::make_unique<pipeline::Executor>(*pp_group_, *schedule_, *stage_, xo);
  }

  error.clear();
  try {
    if (!resume_dir.empty()) {
      load_checkpoint(resume_dir);
    } else if (!config_.model.init_from.empty()) {
      load_weights(config_.model.init_from, false);
    } else {
      for (auto& m : models_) m->init_random(tc.seed);
    }
  } catch (const std::exception& e) {
    error = e.what();
  }
  agree(world_comm_, error, "epx-train: loading the weights");
}

Trainer::~Trainer() = default;

model::ExpertSlots Trainer::slots_of(int ep_rank) const {
  if (balancer_) return balancer_->slots_of(ep_rank);
  return model::Model::contiguous_slots(config_.model, ep_rank, config_.parallel.ep);
}

std::int64_t Trainer::expert_pairs() const {
  std::int64_t n = 0;
  for (const auto& e : engines_) n += e->expert_pairs();
  return n;
}

double Trainer::expert_seconds() const {
  double s = 0;
  for (const auto& e : engines_) s += e->expert_seconds();
  return s;
}

// Within each pipeline stage (its ranks hold the same MoE layers; stages
// may hold different numbers of them), then the worst stage.
void Trainer::record_expert_work(StepResult& r) const {
  const std::vector<double> all =
      allgather(world_comm_,
                std::vector<double>{static_cast<double>(stage_rank_),
                                    static_cast<double>(expert_pairs()), expert_seconds()},
                "gathering the ranks' expert work");
  const int stages = config_.parallel.pp;
  std::vector<double> pairs_max(stages, 0), pairs_sum(stages, 0);
  std::vector<int> ranks(stages, 0);
  double sec_sum = 0;
  for (int q = 0; q < world_size_; ++q) {
    const int s = static_cast<int>(all[3 * q]);
    pairs_max[s] = std::max(pairs_max[s], all[3 * q + 1]);
    pairs_sum[s] += all[3 * q + 1];
    ranks[s] += 1;
    r.expert_seconds_max = std::max(r.expert_seconds_max, all[3 * q + 2]);
    sec_sum += all[3 * q + 2];
  }
  r.rank_pairs_max_over_mean = 0;
  for (int s = 0; s < stages; ++s)
    if (pairs_sum[s] > 0)
      r.rank_pairs_max_over_mean =
          std::max(r.rank_pairs_max_over_mean, pairs_max[s] * ranks[s] / pairs_sum[s]);
  r.expert_seconds_mean = sec_sum / world_size_;
}

StepResult Trainer::train_step() {
  if (executor_) return train_step_pipeline();
  const TrainConfig& tc = config_.train;
  const std::int64_t t = step_ + 1;
  inject_faults(FaultSite::StepStart, rank_, t, timeout_s_);
  const auto t0 = Clock::now();
  model_->dense.zero_grads();
  model_->experts.zero_grads();
  engine_->reset_expert_counts();
  engine_->reset_ep_seconds();

  // This rank's sequences of the global batch, micro_batch_size at a time.
  const std::int64_t B = global_batch_, seq = tc.seq_len;
  const float scale = static_cast<float>(1.0 / static_cast<double>(B * seq));
  inputs_.resize(static_cast<std::size_t>(tc.micro_batch_size * seq));
  targets_.resize(inputs_.size());
  // The gradient sums start part by part during the last micro-batch's
  // backward (head, layers from the last, embedding) and finish after it.
  std::vector<OrderedSum> sums;
  sums.reserve(2 * static_cast<std::size_t>(config_.model.num_layers + 2));
  const auto start_part = [&](int part) {
    const auto [db, de] = model_->dense_range(part);
    const auto [xb, xe] = model_->expert_range(part);
    const int id = static_cast<int>(sums.size());
    sums.emplace_back(world_comm_, model_->dense.grads.data() + db, de - db, id,
                      "dp all-reduce of the dense gradients");
    sums.back().start();
    sums.emplace_back(replica_comm_, model_->experts.grads.data() + xb, xe - xb, id + 1,
                      "dp all-reduce of the expert gradients");
    sums.back().start();
    for (OrderedSum& s : sums) s.progress();
  };
  double loss_sum = 0;
  for (int mb = 0; mb < tc.num_micro_batches; ++mb) {
    fill_micro_batch(false, step_, mb, inputs_.data(), targets_.data());
    if (mb + 1 == tc.num_micro_batches) engine_->set_backward_hook(start_part);
    loss_sum += engine_->forward_backward(
        {inputs_.data(), targets_.data(), tc.micro_batch_size, tc.seq_len}, scale);
    engine_->set_backward_hook({});
  }

  // Gradients: dense ones summed over every rank, experts over their replicas
  // (each rank's loss term already carries 1 / (B seq), so sums are the mean).
  const auto t1 = Clock::now();
  for (OrderedSum& s : sums) s.finish();
  if (balancer_) balancer_->sum_replica_gradients(*model_);
  StepResult r;
  r.step = t;
  r.loss = sum_over_ranks(world_comm_, std::vector<double>{loss_sum}, "dp sum of the loss")[0] /
           static_cast<double>(B * seq);
  std::vector<std::int64_t> flat;
  for (const auto& c : engine_->expert_counts()) flat.insert(flat.end(), c.begin(), c.end());
  flat = sum_over_ranks(world_comm_, flat, "dp sum of the expert counts");
  const double mine_sq = balancer_ ? balancer_->grad_sq_sum(*model_) : grad_sq_sum(model_->experts);
  const double expert_sq =
      sum_over_ranks(ep_comm_, std::vector<double>{mine_sq}, "ep sum of the gradient norm")[0];
  r.dp_seconds = seconds_since(t1);
  record_expert_work(r);

  const std::size_t E = static_cast<std::size_t>(config_.model.num_experts);
  for (std::size_t l = 0; l < static_cast<std::size_t>(model_->num_moe_layers()); ++l)
    r.expert_counts.emplace_back(flat.begin() + l * E, flat.begin() + (l + 1) * E);
  update(r, grad_sq_sum(model_->dense) + expert_sq, t);
  if (balancer_) balance(r, t);
  step_ = t;
  r.seconds = seconds_since(t0);
  r.ep_seconds = engine_->ep_seconds();
  r.tokens_per_s = static_cast<double>(B * seq) / r.seconds;
  return r;
}

void Trainer::balance(StepResult& r, std::int64_t t) {
  // This rank's counts over its chunks (distinct layers).
  std::vector<std::vector<std::int64_t>> counts = engines_[0]->expert_counts();
  for (std::size_t c = 1; c < engines_.size(); ++c)
    for (std::size_t l = 0; l < counts.size(); ++l)
      for (std::size_t e = 0; e < counts[l].size(); ++e)
        counts[l][e] += engines_[c]->expert_counts()[l][e];
  balancer_->observe(counts);
  std::vector<const model::Model*> all;
  std::vector<model::Model*> mutable_all;
  for (auto& m : models_) all.push_back(m.get()), mutable_all.push_back(m.get());
  const bool check = replica_check_asked();
  if (!balancer_->due(t)) {
    if (check) check_replicas(world_comm_, all);
    return;
  }
  inject_faults(FaultSite::Migration, rank_, t, timeout_s_);
  // Point-to-point first, so that a rank that does not come is named (the
  // migration's own agreement can only say that one is missing).
  agree(ep_comm_, "", "the rebalance at step " + std::to_string(t));
  ExpertFingerprints before;
  if (check) before = check_replicas(world_comm_, all);
  r.rebalances.push_back(balancer_->rebalance(mutable_all, t));
  if (check) {
    check_unchanged(before, check_replicas(world_comm_, all),
                    "the migration at step " + std::to_string(t));
    r.rebalances.back().checked = true;
  }
}

void Trainer::update(StepResult& r, double grad_sq, std::int64_t t) {
  const TrainConfig& tc = config_.train;
  r.grad_norm = std::sqrt(grad_sq);
  const float coef = static_cast<float>(clip_coefficient(tc.grad_clip, r.grad_norm));
  r.lr = learning_rate(tc, t);
  for (auto& m : models_) {
    scale_grads(m->dense, coef);
    scale_grads(m->experts, coef);
    adamw_update(m->dense, tc, r.lr, t);
    adamw_update(m->experts, tc, r.lr, t);
    update_bias(*m, r.expert_counts, config_.model.bias_update_rate);
  }
}

void Trainer::fill_micro_batch(bool val, std::int64_t index, int mb, std::int32_t* tokens,
                               std::int32_t* targets) const {
  const TrainConfig& tc = config_.train;
  const std::int64_t B = global_batch_, seq = tc.seq_len;
  const std::int64_t first =
      dp_rank_ * (B / config_.parallel.dp) + static_cast<std::int64_t>(mb) * tc.micro_batch_size;
  for (int i = 0; i < tc.micro_batch_size; ++i) {
    if (val)
      data_->val_sequence(index, first + i, B, tc.seq_len, tokens + i * seq, targets + i * seq);
    else
      data_->train_sequence(index, first + i, B, tc.seq_len, tokens + i * seq, targets + i * seq);
  }
}

double Trainer::eval_loss() {
  if (executor_) return eval_loss_pipeline();
  const TrainConfig& tc = config_.train;
  const std::int64_t B = global_batch_, seq = tc.seq_len;
  inputs_.resize(static_cast<std::size_t>(tc.micro_batch_size * seq));
  targets_.resize(inputs_.size());
  double sum = 0;
  for (int b = 0; b < tc.eval_batches; ++b)
    for (int mb = 0; mb < tc.num_micro_batches; ++mb) {
      fill_micro_batch(true, b, mb, inputs_.data(), targets_.data());
      sum += engine_->forward_loss({inputs_.data(), targets_.data(), tc.micro_batch_size, tc.seq_len});
    }
  return sum_over_ranks(world_comm_, std::vector<double>{sum}, "dp sum of the eval loss")[0] /
         static_cast<double>(tc.eval_batches * B * seq);
}

bool Trainer::fb_overlapped() const noexcept {
  return stage_ && stage_->fb_overlapped();
}

}  // namespace epx::train
