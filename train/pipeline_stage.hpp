// epx-train's pipeline stage: the layers of the model one rank holds for
// each of its schedule chunks, run by pipeline::Executor. Stage s of S
// model stages holds layers [s L / S, (s+1) L / S) (integer division: even,
// with the remainder on the later stages), or with parallel.layers_per_stage
// n the n[s] layers after those of the stages before it; the embedding when
// s = 0 and the final norm and head when s = S - 1. The last stage computes the loss
// itself: its "output" is the per-position cross-entropy [T], whose
// gradient the executor's loss function sets to the loss scale.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <utility>
#include <vector>

#include <epx/pipeline_tools.hpp>

#include "model/engine.hpp"
#include "model/model.hpp"
#include "train/fb_worker.hpp"

namespace epx::train {

// Which part of the model stage `stage` of `num_stages` holds (above);
// layers_per_stage empty: the even split.
model::StagePart stage_part(const model::ModelConfig& config,
                            const std::vector<int>& layers_per_stage, int stage, int num_stages);

class PipelineStage : public pipeline::Stage {
 public:
  // engines[c]: the engine of local chunk c (its model holds that chunk's
  // stage). seq: tokens per sequence, batch: sequences per micro-batch.
  // fb_overlap: the FB units of DualPipe/DualPipeV run their two halves
  // overlapped (below); the chunks' engines must then use different
  // comm::Buffers, and MPI must allow threads (MPI_THREAD_MULTIPLE).
  PipelineStage(std::vector<model::Engine*> engines, int batch, int seq, bool fb_overlap = false);
  ~PipelineStage() override;
  // Whether the FB units run overlapped (fb_overlap was asked for and taken).
  bool fb_overlapped() const noexcept { return worker_ != nullptr; }

  // This step's micro-batches: tokens[mb] and targets[mb], [batch * seq]
  // each, read by the first and the last stage; loss_scale as Engine's.
  void begin_step(const std::vector<std::vector<std::int32_t>>* tokens,
                  const std::vector<std::vector<std::int32_t>>* targets, float loss_scale);

  Tensor forward(int chunk, int mb, const Tensor& input) override;
  Tensor backward(int chunk, int mb, const Tensor& grad_output) override;
  // The zero-bubble split: Bi computes the input gradient and holds the
  // weight GEMMs back (Engine::backward_part with defer_weights) until W
  // runs them; the gradients come out bit for bit as with a full backward.
  // An FB unit (forward of one micro-batch on one chunk, backward of another
  // on the other chunk) with fb_overlap runs its backward on a second thread
  // while this one runs the forward; the two take turns computing, each
  // letting go for every dispatch and combine (model/compute_turn.hpp), so
  // one's all-to-all is in flight while the other computes. The same bits
  // as the forward, then the backward (without fb_overlap, or for a unit
  // whose halves share a chunk).
  Tensor backward_input(int chunk, int mb, const Tensor& grad_output) override;
  void backward_weight(int chunk, int mb) override;
  Tensor forward_backward(int f_chunk, int f_mb, const Tensor& input, int b_chunk, int b_mb,
                          const Tensor& grad_output, Tensor& grad_input) override;
  std::vector<Tensor> weight_grads(int chunk) override;

  // Called once, in the next FB unit, between its forward and its backward
  // (the fault tests' hook: train/faults.hpp); begin_step clears it.
  void set_fb_unit_hook(std::function<void()> hook) { fb_unit_hook_ = std::move(hook); }

  // Every op the executor ran since begin_step, in op order: its start and
  // end (ms on the host's steady clock), and the ms of EP comm inside it
  // (the engines' comm::Buffer calls).
  const std::vector<pipeline::OpTime>& op_times() const noexcept { return times_; }
  const std::vector<double>& op_ep_ms() const noexcept { return ep_ms_; }
  // And the ms it computed: an overlapped FB unit's held compute turn
  // (model/compute_turn.hpp), any other op's time less its EP comm.
  const std::vector<double>& op_compute_ms() const noexcept { return compute_ms_; }
  // And the ms of its EP comm hidden behind compute: in an overlapped FB
  // unit, while one half was in a comm call the other computed; else 0.
  const std::vector<double>& op_hidden_ms() const noexcept { return hidden_ms_; }
  // Every EP comm call (comm::Buffer) of the engines since begin_step, as
  // start and end on the same clock; taking them clears them.
  std::vector<pipeline::OpTime> take_comm_pieces();

 private:
  model::MicroBatch micro_batch(int mb) const;
  Tensor forward_untimed(int chunk, int mb, const Tensor& input);
  Tensor backward_untimed(int chunk, int mb, const Tensor& grad_output, bool defer_weights);
  Tensor forward_backward_overlapped(int f_chunk, int f_mb, const Tensor& input, int b_chunk,
                                     int b_mb, const Tensor& grad_output, Tensor& grad_input);
  // The pieces of the two above: the Saved bookkeeping (one thread) and the
  // engine work on a Saved (either thread).
  std::unique_ptr<model::Engine::Saved> take_spare(int chunk);
  std::unique_ptr<model::Engine::Saved> take_live(int chunk, int mb);
  Tensor run_forward(int chunk, int mb, const Tensor& input, model::Engine::Saved& s);
  Tensor run_backward(int chunk, int mb, const Tensor& grad_output, model::Engine::Saved& s,
                      bool defer_weights);
  void backward_done(int chunk, int mb, std::unique_ptr<model::Engine::Saved> s,
                     bool defer_weights);
  std::vector<model::Engine*> engines_;
  int batch_ = 0, seq_ = 0;
  const std::vector<std::vector<std::int32_t>>* tokens_ = nullptr;
  const std::vector<std::vector<std::int32_t>>* targets_ = nullptr;
  float loss_scale_ = 1;
  // Activations of the micro-batches in flight, by (chunk, mb); reused.
  std::map<std::pair<int, int>, std::unique_ptr<model::Engine::Saved>> live_;
  // Those whose Bi ran and whose W has not, by (chunk, mb).
  std::map<std::pair<int, int>, std::unique_ptr<model::Engine::Saved>> awaiting_w_;
  std::vector<std::unique_ptr<model::Engine::Saved>> spare_;
  // Times the outermost call only (Bi and FB call forward/backward inside).
  template <class F>
  auto timed(F&& f);
  std::function<void()> fb_unit_hook_;
  double ep_ms_now() const;
  int depth_ = 0;
  std::vector<pipeline::OpTime> times_;
  std::vector<double> ep_ms_;
  std::vector<double> compute_ms_, hidden_ms_;
  // Set by an overlapped FB unit for timed().
  double overlapped_compute_ms_ = -1, overlapped_hidden_ms_ = 0;
  std::unique_ptr<FbWorker> worker_;  // with fb_overlap: runs the FB units' backward halves
};

}  // namespace epx::train
