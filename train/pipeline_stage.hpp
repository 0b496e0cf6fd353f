// epx-train's pipeline stage: the layers of the model one rank holds for
// each of its schedule chunks, run by pipeline::Executor. Stage s of S
// model stages holds layers [s L / S, (s+1) L / S) (integer division: even,
// with the remainder on the later stages), the embedding when s = 0 and the
// final norm and head when s = S - 1. The last stage computes the loss
// itself: its "output" is the per-position cross-entropy [T], whose
// gradient the executor's loss function sets to the loss scale.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <utility>
#include <vector>

#include <epx/pipeline_tools.hpp>

#include "model/engine.hpp"
#include "model/model.hpp"

namespace epx::train {

// Which part of the model stage `stage` of `num_stages` holds (above).
model::StagePart stage_part(const model::ModelConfig& config, int stage, int num_stages);

class PipelineStage : public pipeline::Stage {
 public:
  // engines[c]: the engine of local chunk c (its model holds that chunk's
  // stage). seq: tokens per sequence, batch: sequences per micro-batch.
  PipelineStage(std::vector<model::Engine*> engines, int batch, int seq);
  ~PipelineStage() override;

  // This step's micro-batches: tokens[mb] and targets[mb], [batch * seq]
  // each, read by the first and the last stage; loss_scale as Engine's.
  void begin_step(const std::vector<std::vector<std::int32_t>>* tokens,
                  const std::vector<std::vector<std::int32_t>>* targets, float loss_scale);

  Tensor forward(int chunk, int mb, const Tensor& input) override;
  Tensor backward(int chunk, int mb, const Tensor& grad_output) override;
  // The zero-bubble split and the FB unit run as the base class does (the
  // whole backward in Bi, forward then backward in FB); overridden only to
  // time each op.
  Tensor backward_input(int chunk, int mb, const Tensor& grad_output) override;
  void backward_weight(int chunk, int mb) override;
  Tensor forward_backward(int f_chunk, int f_mb, const Tensor& input, int b_chunk, int b_mb,
                          const Tensor& grad_output, Tensor& grad_input) override;
  std::vector<Tensor> weight_grads(int chunk) override;

  // With `on`, op_times() starts afresh and every op the executor runs from
  // now on appends its start and end (ms on the host's steady clock), in op
  // order; `off` stops recording and keeps them.
  void record_times(bool on);
  const std::vector<pipeline::OpTime>& op_times() const noexcept { return times_; }

 private:
  model::MicroBatch micro_batch(int mb) const;
  Tensor forward_untimed(int chunk, int mb, const Tensor& input);
  Tensor backward_untimed(int chunk, int mb, const Tensor& grad_output);
  std::vector<model::Engine*> engines_;
  int batch_ = 0, seq_ = 0;
  const std::vector<std::vector<std::int32_t>>* tokens_ = nullptr;
  const std::vector<std::vector<std::int32_t>>* targets_ = nullptr;
  float loss_scale_ = 1;
  // Activations of the micro-batches in flight, by (chunk, mb); reused.
  std::map<std::pair<int, int>, std::unique_ptr<model::Engine::Saved>> live_;
  std::vector<std::unique_ptr<model::Engine::Saved>> spare_;
  // Times the outermost call only (Bi and FB call forward/backward inside).
  template <class F>
  auto timed(F&& f);
  bool recording_ = false;
  int depth_ = 0;
  std::vector<pipeline::OpTime> times_;
};

}  // namespace epx::train
