// The whole model on one micro-batch: embedding -> layers (attention, then
// a dense or MoE FFN) -> final RMSNorm -> LM head -> cross-entropy, then the
// same in reverse for the gradients.
#include "model/engine.hpp"

#include <chrono>

#include <epx/model_kernels.hpp>

#include "core/check.hpp"
#include "model/saved.hpp"

namespace epx::model {

Engine::Engine(Model& model, comm::Buffer& buffer, EngineOptions options)
    : model_(model), buffer_(buffer), options_(options), saved_(std::make_unique<Saved>()) {
  EPX_CHECK_EQ(buffer.group().size(), model.ep_size(), InvalidArgument,
               "Engine: the Buffer's group must be the EP group");
  reset_expert_counts();
}

Engine::~Engine() = default;

void Engine::set_placement(const balancer::Placement* placement, int num_nodes) {
  if (placement) {
    const std::int64_t slots = static_cast<std::int64_t>(model_.ep_size()) * model_.local_experts();
    EPX_CHECK(
        placement->phy2log.dim(0) == model_.num_moe_layers() && placement->phy2log.dim(1) == slots,
        InvalidArgument, "Engine::set_placement: a placement of ", placement->phy2log.dim(0),
        " layers x ", placement->phy2log.dim(1), " slots, expected ", model_.num_moe_layers(),
        " x ", slots, " (EP size x the model's slots per rank)");
  }
  placement_ = placement;
  placement_nodes_ = num_nodes;
}

void Engine::reset_expert_counts() {
  counts_.assign(static_cast<std::size_t>(model_.num_moe_layers()),
                 std::vector<std::int64_t>(static_cast<std::size_t>(model_.config().num_experts), 0));
}

std::vector<std::int64_t> Engine::last_routing() const {
  std::vector<std::int64_t> r;
  const std::int64_t n = saved_->tokens * model_.config().top_k;
  for (std::size_t l = 0; l < model_.layers.size(); ++l)
    if (model_.layers[l].moe && model_.layers[l].held && l < saved_->moe.size())
      r.insert(r.end(), saved_->moe[l].topk_idx.begin(), saved_->moe[l].topk_idx.begin() + n);
  return r;
}

double Engine::forward_backward(const MicroBatch& mb, float loss_scale) {
  return run(mb, loss_scale, true);
}

double Engine::forward_loss(const MicroBatch& mb) { return run(mb, 0.0f, false); }

double Engine::run(const MicroBatch& mb, float loss_scale, bool backward) {
  Saved& s = *saved_;
  const double loss_sum = forward_part(s, mb, nullptr, backward);
  if (backward) backward_part(s, mb, nullptr, loss_scale);
  return loss_sum;
}

std::unique_ptr<Engine::Saved> Engine::make_saved() const {
  return std::make_unique<Saved>();
}

double Engine::forward_part(Saved& s, const MicroBatch& mb, const float* h_in, bool count) {
  const ModelConfig& c = model_.config();
  ParamStore& P = model_.dense;
  const StagePart& part = model_.part();
  const std::int64_t H = c.hidden_size, V = c.vocab_size;
  const int L = c.num_layers;
  s.batch = mb.batch;
  s.seq = mb.seq;
  s.tokens = static_cast<std::int64_t>(mb.batch) * mb.seq;
  const std::int64_t T = s.tokens;
  s.positions.resize(static_cast<std::size_t>(T));
  for (std::int64_t i = 0; i < T; ++i) s.positions[i] = static_cast<std::int32_t>(i % mb.seq);
  s.attention.resize(static_cast<std::size_t>(L));
  s.dense.resize(static_cast<std::size_t>(L));
  s.moe.resize(static_cast<std::size_t>(L));

  std::vector<float>& h = s.h;
  h.resize(static_cast<std::size_t>(T * H));
  if (part.embed) {
    kernels::embedding_forward(h.data(), P.value(model_.embed), mb.inputs, T, H);
  } else {
    EPX_CHECK(h_in != nullptr, Internal, "Engine::forward_part: no input for a later stage");
    std::copy(h_in, h_in + T * H, h.begin());
  }
  for (int l = part.first_layer; l < part.last_layer; ++l) {
    attention_forward(l, s, h);
    if (model_.layers[l].moe) {
      moe_forward(l, s, h, count);
    } else {
      dense_ffn_forward(l, s, h);
    }
  }
  if (!part.head) return 0;
  norm_forward(s.final_norm, h, P.value(model_.final_norm), T, H,
               static_cast<float>(c.rms_norm_eps));
  float* logits = at_least(s.logits, T * V);
  kernels::linear_forward(logits, s.final_norm.xn.data(), P.value(model_.lm_head), T, H, V);
  std::vector<float>& losses = s.losses;
  losses.resize(static_cast<std::size_t>(T));
  kernels::cross_entropy_forward(losses.data(), at_least(s.lse, T), logits, mb.targets, T, V);
  double loss_sum = 0;
  for (const float l : losses) loss_sum += l;
  return loss_sum;
}

void Engine::backward_part(Saved& s, const MicroBatch& mb, const float* grad_out, float loss_scale,
                           bool defer_weights) {
  EPX_CHECK(!defer_weights || !hook_, Internal,
            "Engine::backward_part: a backward hook cannot see held-back weight gradients");
  EPX_CHECK(s.deferred.jobs.empty(), Internal,
            "Engine::backward_part: the micro-batch's last weight_part did not run");
  s.defer_weights = defer_weights;
  const ModelConfig& c = model_.config();
  ParamStore& P = model_.dense;
  const StagePart& part = model_.part();
  const std::int64_t H = c.hidden_size, V = c.vocab_size;
  const std::int64_t T = s.tokens;
  const int L = c.num_layers;

  // dh is the gradient of the residual stream: from the head's loss, or
  // the next stage's gradient of this stage's output.
  std::vector<float>& dh = s.dh;
  if (part.head) {
    float* logits = s.logits.data();
    kernels::cross_entropy_backward(logits, logits, s.lse.data(), mb.targets, T, V, loss_scale);
    float* dhn = at_least(s.dhn, T * H);
    kernels::linear_backward_input(dhn, logits, P.value(model_.lm_head), T, H, V, false);
    weight_grad(s.held(), P.grad(model_.lm_head), logits, /*dy_changes=*/false,
                s.final_norm.xn.data(), T, H, V);
    dh.assign(static_cast<std::size_t>(T * H), 0.0f);
    norm_backward(dh, P.grad(model_.final_norm), dhn, s.final_norm, P.value(model_.final_norm), T,
                  H);
    if (hook_) hook_(L);
  } else {
    EPX_CHECK(grad_out != nullptr, Internal, "Engine::backward_part: no output gradient");
    dh.assign(grad_out, grad_out + T * H);
  }
  for (int l = part.last_layer - 1; l >= part.first_layer; --l) {
    if (model_.layers[l].moe) {
      moe_backward(l, s, dh);
    } else {
      dense_ffn_backward(l, s, dh);
    }
    attention_backward(l, s, dh);
    if (hook_) hook_(l);
  }
  if (part.embed) {
    // dh is not written again before weight_part: no copy.
    float* dembed = P.grad(model_.embed);
    const float* d = dh.data();
    const std::int32_t* ids = mb.inputs;
    if (DeferredWeightGrads* held = s.held()) {
      held->jobs.emplace_back([=] { kernels::embedding_backward(dembed, d, ids, T, H); });
    } else {
      kernels::embedding_backward(dembed, d, ids, T, H);
    }
    if (hook_) hook_(-1);
  }
  s.defer_weights = false;
}

void Engine::weight_part(Saved& s) {
  s.deferred.run();
}

const std::vector<float>& Engine::hidden(const Saved& s) {
  return s.h;
}
const std::vector<float>& Engine::losses(const Saved& s) {
  return s.losses;
}
const std::vector<float>& Engine::input_grad(const Saved& s) {
  return s.dh;
}

}  // namespace epx::model
