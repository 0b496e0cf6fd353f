// epx-train with pipeline parallelism (parallel.pp > 1): one step runs the
// schedule over this rank's pipeline (pipeline::Executor with a
// PipelineStage), then the gradients are summed over each stage's dp ranks
// (dense) and its expert replicas, and every chunk takes the same clipped
// AdamW update. DualPipe's two copies of a stage are summed by the executor
// first (a + b on both ranks: the same bits), so they stay identical.
#include <algorithm>
#include <cmath>
#include <limits>

#include "core/check.hpp"
#include "core/file_io.hpp"
#include "core/stopwatch.hpp"
#include "model/saved.hpp"
#include "train/faults.hpp"
#include "train/optimizer.hpp"
#include "train/pipeline_timeline.hpp"
#include "train/trainer.hpp"

namespace epx::train {

namespace {

using core::seconds_since;

// Is (rank, chunk) the first place, in (rank, chunk) order, that holds its
// stage? Norms count each stage there only (DualPipe keeps two copies).
bool first_copy(const pipeline::Schedule& s, int rank, int chunk) {
  const int stage = s.stage_of[static_cast<std::size_t>(rank)][static_cast<std::size_t>(chunk)];
  for (int r = 0; r < s.ranks; ++r)
    for (int c = 0; c < s.chunks_per_rank; ++c)
      if (s.stage_of[static_cast<std::size_t>(r)][static_cast<std::size_t>(c)] == stage)
        return r == rank && c == chunk;
  return false;
}

}  // namespace

bool Trainer::first_copy_of_stage(int chunk) const {
  return first_copy(*schedule_, stage_rank_, chunk);
}

StepResult Trainer::train_step_pipeline() {
  const TrainConfig& tc = config_.train;
  const std::int64_t t = step_ + 1;
  inject_faults(FaultSite::StepStart, rank_, t, timeout_s_);
  const auto t0 = core::SteadyClock::now();
  for (auto& m : models_) {
    m->dense.zero_grads();
    m->experts.zero_grads();
  }
  for (auto& e : engines_) {
    e->reset_expert_counts();
    e->reset_ep_seconds();
  }

  // This pipeline's micro-batches of the global batch.
  const std::int64_t B = global_batch_, seq = tc.seq_len;
  const std::int64_t T = static_cast<std::int64_t>(tc.micro_batch_size) * seq;
  const int M = tc.num_micro_batches;
  mb_tokens_.resize(static_cast<std::size_t>(M));
  mb_targets_.resize(static_cast<std::size_t>(M));
  std::vector<Tensor> inputs(M), labels(M);
  for (int mb = 0; mb < M; ++mb) {
    mb_tokens_[mb].resize(static_cast<std::size_t>(T));
    mb_targets_[mb].resize(static_cast<std::size_t>(T));
    fill_micro_batch(false, step_, mb, mb_tokens_[mb].data(), mb_targets_[mb].data());
    inputs[mb] = Tensor::wrap(mb_tokens_[mb].data(), {T}, DType::i32);
    labels[mb] = Tensor::wrap(mb_targets_[mb].data(), {T}, DType::i32);
  }
  const float scale = static_cast<float>(1.0 / static_cast<double>(B * seq));
  stage_->begin_step(&mb_tokens_, &mb_targets_, scale);
  stage_->set_fb_unit_hook([this, t] { inject_faults(FaultSite::FbUnit, rank_, t, timeout_s_); });
  // The last stage's output is the per-position loss; its gradient is the scale.
  const pipeline::LossFn loss = [&](int, const Tensor& out, const Tensor&, Tensor& grad) {
    double sum = 0;
    const float* o = out.data<float>();
    float* g = grad.data<float>();
    for (std::int64_t i = 0; i < out.numel(); ++i) {
      sum += o[i];
      g[i] = scale;
    }
    return sum;
  };
  const bool draw = !config_.log.timeline.empty() && t == config_.log.timeline_step;
  const auto t_pipe = core::SteadyClock::now();
  const std::vector<double> losses = executor_->step(inputs, labels, loss);
  const double pipeline_seconds = seconds_since(t_pipe);
  // This rank's ops by kind, for the bench's split and the simulator's costs.
  const std::vector<pipeline::Op>& my_ops = schedule_->ops[static_cast<std::size_t>(stage_rank_)];
  const std::vector<pipeline::OpTime>& times = stage_->op_times();
  EPX_CHECK_EQ(times.size(), my_ops.size(), Internal, "the pipeline stage timed ", times.size(),
               " ops, the schedule has ", my_ops.size());
  std::vector<OpTotals> chunk_ops(
      schedule_->stage_of[static_cast<std::size_t>(stage_rank_)].size());
  double ops_ms = 0;
  for (std::size_t i = 0; i < times.size(); ++i) {
    chunk_ops[static_cast<std::size_t>(my_ops[i].chunk)].add(
        my_ops[i].kind, times[i].end - times[i].start, stage_->op_ep_ms()[i],
        stage_->op_compute_ms()[i], stage_->op_hidden_ms()[i]);
    ops_ms += times[i].end - times[i].start;
  }
  // The micro-batches whose last stage this rank holds (a NaN there is a
  // real one and must show).
  double loss_sum = 0;
  const int last = schedule_->stages - 1;
  for (int mb = 0; mb < M; ++mb) {
    const auto& path = schedule_->paths[static_cast<std::size_t>(schedule_->path_of[mb])];
    if (path[static_cast<std::size_t>(last)].rank == stage_rank_) loss_sum += losses[mb];
  }

  // Dense gradients over the stage's dp ranks, experts over their replicas.
  const auto t1 = core::SteadyClock::now();
  for (auto& m : models_) {
    if (!m->dense.grads.empty())
      ordered_sum(stage_comm_, m->dense.grads.data(),
                  static_cast<std::int64_t>(m->dense.grads.size()),
                  "dp all-reduce of the dense gradients");
    if (!m->experts.grads.empty())
      ordered_sum(replica_comm_, m->experts.grads.data(),
                  static_cast<std::int64_t>(m->experts.grads.size()),
                  "dp all-reduce of the expert gradients");
  }
  if (balancer_)
    for (auto& m : models_) balancer_->sum_replica_gradients(*m);
  StepResult r;
  r.step = t;
  r.pipeline_seconds = pipeline_seconds;
  r.ops_seconds = ops_ms / 1e3;
  r.chunk_ops = std::move(chunk_ops);
  r.pipeline_rank = stage_rank_;
  r.pipeline_index = dp_rank_;
  r.executor = executor_->last_step_stats();
  r.op_times = times;
  r.loss = sum_over_ranks(world_comm_, std::vector<double>{loss_sum}, "sum of the loss")[0] /
           static_cast<double>(B * seq);
  // Counts: each rank's chunks hold distinct layers, and each layer's
  // micro-batches pass one copy of it once, so the world sum is the batch's.
  std::vector<std::int64_t> flat;
  for (std::size_t c = 0; c < engines_.size(); ++c) {
    std::size_t i = 0;
    for (const auto& layer : engines_[c]->expert_counts())
      for (const std::int64_t n : layer) {
        if (c == 0)
          flat.push_back(n);
        else
          flat[i] += n;
        ++i;
      }
  }
  flat = sum_over_ranks(world_comm_, flat, "sum of the expert counts");
  // Each parameter once: dense at dp rank 0, experts on the stage's first EP group.
  double sq = 0;
  for (std::size_t c = 0; c < models_.size(); ++c) {
    if (!first_copy_of_stage(static_cast<int>(c))) continue;
    if (dp_rank_ == 0) sq += grad_sq_sum(models_[c]->dense);
    if (dp_rank_ < config_.parallel.ep)
      sq += balancer_ ? balancer_->grad_sq_sum(*models_[c]) : grad_sq_sum(models_[c]->experts);
  }
  sq = sum_over_ranks(world_comm_, std::vector<double>{sq}, "sum of the gradient norm")[0];
  r.dp_seconds = seconds_since(t1);
  record_expert_work(r);
  const std::size_t E = static_cast<std::size_t>(config_.model.num_experts);
  for (std::size_t l = 0; l < static_cast<std::size_t>(model_->num_moe_layers()); ++l)
    r.expert_counts.emplace_back(flat.begin() + l * E, flat.begin() + (l + 1) * E);
  update(r, sq, t);
  if (balancer_) balance(r, t);

  if (draw) draw_timeline(r);
  step_ = t;
  r.seconds = seconds_since(t0);
  for (const auto& e : engines_) r.ep_seconds += e->ep_seconds();
  r.tokens_per_s = static_cast<double>(B * seq) / r.seconds;
  return r;
}

// Pipeline 0's op times to its stage 0 (world rank 0), which writes the
// picture. Other pipelines ran the same schedule; one is enough.
void Trainer::draw_timeline(StepResult& r) {
  if (dp_rank_ != 0) return;
  std::vector<double> mine;
  for (const pipeline::OpTime& t : stage_->op_times()) mine.insert(mine.end(), {t.start, t.end});
  std::size_t most = 0;
  for (const auto& ops : schedule_->ops) most = std::max(most, ops.size());
  mine.resize(2 * most, 0.0);
  const std::vector<double> all = allgather(pp_comm_, mine, "gathering the pipeline timeline");
  // The EP comm calls inside the ops, padded to the most any rank made.
  std::vector<double> calls;
  for (const pipeline::OpTime& t : stage_->take_comm_pieces())
    calls.insert(calls.end(), {t.start, t.end});
  const std::vector<std::int64_t> counts =
      allgather(pp_comm_, std::vector<std::int64_t>{static_cast<std::int64_t>(calls.size() / 2)},
                "gathering the pipeline timeline");
  const std::size_t most_calls =
      static_cast<std::size_t>(*std::max_element(counts.begin(), counts.end()));
  calls.resize(2 * most_calls, 0.0);
  const std::vector<double> all_calls =
      allgather(pp_comm_, calls, "gathering the pipeline timeline");
  // Rank 0 draws and writes; the pipeline learns whether that worked, so a
  // failure (say, a directory that is not there) stops every rank with its
  // message instead of leaving the others to time out on rank 0.
  std::string error;
  if (rank_ == 0) {
    try {
      std::vector<std::vector<pipeline::OpTime>> times(schedule_->ops.size());
      for (std::size_t q = 0; q < times.size(); ++q)
        for (std::size_t i = 0; i < schedule_->ops[q].size(); ++i)
          times[q].push_back({all[2 * (q * most + i)], all[2 * (q * most + i) + 1]});
      std::vector<std::vector<pipeline::OpTime>> comm(schedule_->ops.size());
      for (std::size_t q = 0; q < comm.size(); ++q)
        for (std::int64_t i = 0; i < counts[q]; ++i)
          comm[q].push_back({all_calls[2 * (q * most_calls + static_cast<std::size_t>(i))],
                             all_calls[2 * (q * most_calls + static_cast<std::size_t>(i)) + 1]});
      const TimelineReport rep = pipeline_timeline(*schedule_, times, comm);
      core::write_file_atomically(config_.log.timeline, {{rep.svg.data(), rep.svg.size()}},
                                  "log.timeline");
      r.timeline = config_.log.timeline;
      r.timeline_measured_ms = rep.measured_ms;
      r.timeline_simulated_ms = rep.simulated_ms;
      r.timeline_replayed_ms = rep.replayed_ms;
      r.timeline_handoff_ms = rep.handoff_ms;
    } catch (const std::exception& e) {
      error = e.what();
    }
  }
  agree(pp_comm_, error, "log.timeline");
}

// Forward only, micro-batch by micro-batch along the schedule's first path
// (stage s at paths[0][s]): each rank runs its stages in stage order,
// receiving the hidden state from the previous stage's rank and sending it
// on, so the chain cannot wait in a cycle.
double Trainer::eval_loss_pipeline() {
  const TrainConfig& tc = config_.train;
  const std::int64_t B = global_batch_, seq = tc.seq_len;
  const std::int64_t T = static_cast<std::int64_t>(tc.micro_batch_size) * seq;
  const std::int64_t H = config_.model.hidden_size;
  const std::vector<pipeline::Location>& path = schedule_->paths.at(0);
  const int S = schedule_->stages;
  std::vector<std::int32_t> tokens(static_cast<std::size_t>(T)), targets(tokens.size());
  std::vector<float> h_in(static_cast<std::size_t>(T * H)), h_out(h_in.size());
  std::unique_ptr<model::Engine::Saved> saved = engine_->make_saved();
  constexpr int kTagEval = 7401;
  double sum = 0;
  for (int b = 0; b < tc.eval_batches; ++b)
    for (int mb = 0; mb < tc.num_micro_batches; ++mb) {
      fill_micro_batch(true, b, mb, tokens.data(), targets.data());
      const model::MicroBatch batch{tokens.data(), targets.data(), tc.micro_batch_size, tc.seq_len};
      for (int s = 0; s < S; ++s) {
        if (path[s].rank != stage_rank_) continue;
        if (s > 0 && path[s - 1].rank != stage_rank_) {
          std::vector<MPI_Request> req(1);
          MPI_Irecv(h_in.data(), static_cast<int>(h_in.size()), MPI_FLOAT, path[s - 1].rank,
                    kTagEval, pp_comm_.get(), &req[0]);
          wait_all(pp_comm_, req, {path[s - 1].rank},
                   "eval: the hidden state of stage " + std::to_string(s - 1));
        } else if (s > 0) {
          h_in.swap(h_out);
        }
        model::Engine& e = *engines_.at(static_cast<std::size_t>(path[s].chunk));
        const double l = e.forward_part(*saved, batch, s > 0 ? h_in.data() : nullptr, false);
        if (s == S - 1) {
          sum += l;
          continue;
        }
        const std::vector<float>& out = model::Engine::hidden(*saved);
        std::copy(out.begin(), out.begin() + T * H, h_out.begin());
        if (path[s + 1].rank != stage_rank_) {
          std::vector<MPI_Request> req(1);
          MPI_Isend(h_out.data(), static_cast<int>(h_out.size()), MPI_FLOAT, path[s + 1].rank,
                    kTagEval, pp_comm_.get(), &req[0]);
          wait_all(pp_comm_, req, {path[s + 1].rank},
                   "eval: sending the hidden state of stage " + std::to_string(s));
        }
      }
    }
  return sum_over_ranks(world_comm_, std::vector<double>{sum}, "sum of the eval loss")[0] /
         static_cast<double>(tc.eval_batches * B * seq);
}

}  // namespace epx::train
