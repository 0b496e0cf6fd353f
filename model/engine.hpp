// Forward and backward of the model on one micro-batch, with the routed
// experts of every MoE layer reached through comm::Buffer (dispatch ->
// grouped expert GEMM -> combine; backward: cached dispatch of the gradient
// -> expert backward -> combine). Gradients accumulate (+=) into the
// model's ParamStores, so micro-batches add up.
//
// The ops are Megatron-Core's MoELayer pieces, one function each (route,
// dispatch, experts, combine), so that a pipeline schedule can interleave the
// pieces of two micro-batches later without touching the math.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <utility>
#include <vector>

#include <epx/balancer.hpp>
#include <epx/comm.hpp>

#include "model/model.hpp"

namespace epx::model {

class ComputeTurn;

struct MicroBatch {
  const std::int32_t* inputs = nullptr;   // [batch, seq] token ids
  const std::int32_t* targets = nullptr;  // [batch, seq]
  int batch = 0;
  int seq = 0;
};

struct EngineOptions {
  bool fp8_dispatch = false;  // the forward dispatch's payload as e4m3 + per-128 scales
};

class Engine {
 public:
  // `buffer` spans this rank's EP group (model.ep_size() ranks, this one at
  // model.ep_rank()); every rank of it runs the same micro-batches in step.
  Engine(Model& model, comm::Buffer& buffer, EngineOptions options = {});
  ~Engine();

  // Forward and backward: parameter grads += d(loss_scale * sum of the
  // per-position losses)/d(param). Returns the sum of the per-position
  // cross-entropies (in position order, in double).
  double forward_backward(const MicroBatch& mb, float loss_scale);
  // Forward only (evaluation): the sum of the per-position cross-entropies.
  double forward_loss(const MicroBatch& mb);

  // Per MoE layer, the (token, expert) choices of this rank's tokens per
  // logical expert since the last reset (forward_backward only).
  const std::vector<std::vector<std::int64_t>>& expert_counts() const noexcept { return counts_; }
  void reset_expert_counts();
  // Seconds spent inside comm::Buffer calls since the last reset, and in the
  // routed experts' GEMMs (forward and backward) with the (row, expert)
  // pairs they computed: what a balancer evens out between ranks.
  double ep_seconds() const noexcept { return ep_seconds_; }
  double expert_seconds() const noexcept { return expert_seconds_; }
  std::int64_t expert_pairs() const noexcept { return expert_pairs_; }
  void reset_ep_seconds() noexcept { ep_seconds_ = expert_seconds_ = 0, expert_pairs_ = 0; }
  // With record_comm_pieces(true), every comm::Buffer call since the last
  // take: its start and end in ms on the host's steady clock (the pipeline
  // timeline draws them inside the ops). Off by default: the list would grow
  // without a taker.
  struct CommPiece {
    double start_ms = 0, end_ms = 0;
  };
  void record_comm_pieces(bool on) noexcept { record_comm_ = on; }
  std::vector<CommPiece> take_comm_pieces() { return std::exchange(comm_pieces_, {}); }

  // Redundant experts: with a placement (balancer::rebalance_experts over the
  // EP group, model.expert_slots() this rank's share of it), each (token,
  // logical expert) goes to one of the expert's replicas
  // (balancer::route_to_replicas; num_nodes as the placement was planned)
  // and the dispatch addresses physical slots. nullptr: slot = expert, the
  // contiguous layout. The placement must outlive its use.
  void set_placement(const balancer::Placement* placement, int num_nodes);

  // The FB overlap (model/compute_turn.hpp): with a turn, each comm::Buffer
  // call lets go of it for its duration and takes it back after. The caller
  // holds it around the engine's work. nullptr: off.
  void set_compute_turn(ComputeTurn* turn) noexcept { turn_ = turn; }

  // Called inside forward_backward's backward as soon as a part's parameter
  // gradients are final for this micro-batch, so their all-reduce can start
  // while the backward goes on: part num_layers is the head (model.norm,
  // lm_head), then each layer from the last down, then -1 the embedding.
  void set_backward_hook(std::function<void(int part)> hook) { hook_ = std::move(hook); }

  // The routing of the last micro-batch: every MoE layer's topk_idx [T,K],
  // concatenated (tests use it to tell a near-tie flip from a wrong gradient).
  std::vector<std::int64_t> last_routing() const;

  struct Saved;  // one micro-batch's activations
  Model& model() noexcept { return model_; }

  // A pipeline stage's pieces: the layers this model holds (Model::part) on
  // one micro-batch, with the activations in a Saved of the caller's (one
  // per micro-batch in flight). forward_part reads the tokens when the model
  // holds the embedding, else h_in [T,H]; it returns the loss sum when it
  // holds the head (per-position losses in losses(s)), else 0 with the
  // output in hidden(s). count: add the routing to expert_counts().
  // backward_part takes the output gradient grad_out [T,H] (or, at the
  // head, loss_scale) and leaves the input gradient in input_grad(s).
  //
  // The zero-bubble split: with defer_weights, backward_part computes the
  // input gradient (and the norms' small weight gradients) only; the weight
  // GEMMs of every linear, MLP, expert, router, head and the embedding wait
  // in s until weight_part(s) runs them. Each parameter's gradient then gets
  // the same addends in the same order as the unsplit backward, so the
  // split gives the same bits as long as weight_part runs micro-batches in
  // their backward order (the schedules' W FIFO). s must not be reused, nor
  // the micro-batch's tokens freed, in between. No backward hook may be set.
  std::unique_ptr<Saved> make_saved() const;
  double forward_part(Saved& s, const MicroBatch& mb, const float* h_in, bool count);
  void backward_part(Saved& s, const MicroBatch& mb, const float* grad_out, float loss_scale,
                     bool defer_weights = false);
  void weight_part(Saved& s);
  static const std::vector<float>& hidden(const Saved& s);
  static const std::vector<float>& losses(const Saved& s);
  static const std::vector<float>& input_grad(const Saved& s);

 private:
  double run(const MicroBatch& mb, float loss_scale, bool backward);
  void attention_forward(int layer, Saved& s, std::vector<float>& h);
  void attention_backward(int layer, Saved& s, std::vector<float>& dh);
  void dense_ffn_forward(int layer, Saved& s, std::vector<float>& h);
  void dense_ffn_backward(int layer, Saved& s, std::vector<float>& dh);
  void moe_forward(int layer, Saved& s, std::vector<float>& h, bool count);
  void moe_backward(int layer, Saved& s, std::vector<float>& dh);

  Model& model_;
  comm::Buffer& buffer_;
  EngineOptions options_;
  std::vector<std::vector<std::int64_t>> counts_;
  // One comm::Buffer call that began at t0 ended now: its time and piece.
  void note_comm(std::chrono::steady_clock::time_point t0);
  double ep_seconds_ = 0, expert_seconds_ = 0;
  std::vector<CommPiece> comm_pieces_;
  bool record_comm_ = false;
  std::int64_t expert_pairs_ = 0;
  const balancer::Placement* placement_ = nullptr;
  int placement_nodes_ = 1;
  std::unique_ptr<Saved> saved_;
  ComputeTurn* turn_ = nullptr;
  std::function<void(int)> hook_;
};

}  // namespace epx::model
