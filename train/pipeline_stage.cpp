#include "train/pipeline_stage.hpp"

#include <algorithm>
#include <chrono>
#include <functional>
#include <type_traits>
#include <utility>

#include "core/check.hpp"
#include "model/compute_turn.hpp"
#include "model/saved.hpp"

namespace epx::train {

model::StagePart stage_part(const model::ModelConfig& c, const std::vector<int>& layers_per_stage,
                            int stage, int num_stages) {
  model::StagePart p;
  if (layers_per_stage.empty()) {
    p.first_layer = stage * c.num_layers / num_stages;
    p.last_layer = (stage + 1) * c.num_layers / num_stages;
  } else {
    EPX_CHECK_EQ(static_cast<int>(layers_per_stage.size()), num_stages, Internal,
                 "stage_part: parallel.layers_per_stage was not validated");
    for (int s = 0; s < stage; ++s) p.first_layer += layers_per_stage[s];
    p.last_layer = p.first_layer + layers_per_stage[stage];
  }
  p.embed = stage == 0;
  p.head = stage == num_stages - 1;
  return p;
}

PipelineStage::PipelineStage(std::vector<model::Engine*> engines, int batch, int seq,
                             bool fb_overlap)
    : engines_(std::move(engines)), batch_(batch), seq_(seq) {
  if (fb_overlap) worker_ = std::make_unique<FbWorker>();
  for (model::Engine* e : engines_) e->record_comm_pieces(true);  // cleared every step
}

PipelineStage::~PipelineStage() = default;

void PipelineStage::begin_step(const std::vector<std::vector<std::int32_t>>* tokens,
                               const std::vector<std::vector<std::int32_t>>* targets,
                               float loss_scale) {
  tokens_ = tokens;
  targets_ = targets;
  loss_scale_ = loss_scale;
  times_.clear();
  ep_ms_.clear();
  for (model::Engine* e : engines_) e->take_comm_pieces();  // this step's only
  compute_ms_.clear();
  hidden_ms_.clear();
  fb_unit_hook_ = nullptr;
}

model::MicroBatch PipelineStage::micro_batch(int mb) const {
  return {(*tokens_)[static_cast<std::size_t>(mb)].data(),
          (*targets_)[static_cast<std::size_t>(mb)].data(), batch_, seq_};
}

namespace {
double now_ms() {
  return std::chrono::duration<double, std::milli>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
}  // namespace

double PipelineStage::ep_ms_now() const {
  double s = 0;
  for (const model::Engine* e : engines_) s += e->ep_seconds();
  return 1e3 * s;
}

template <class F>
auto PipelineStage::timed(F&& f) {
  const bool outer = depth_ == 0;
  const double start = outer ? now_ms() : 0;
  const double ep_start = outer ? ep_ms_now() : 0;
  ++depth_;
  struct Leave {
    int& depth;
    ~Leave() { --depth; }
  } leave{depth_};
  const auto record = [&] {
    if (!outer) return;
    times_.push_back({start, now_ms()});
    ep_ms_.push_back(ep_ms_now() - ep_start);
    const double wall = times_.back().end - start;
    compute_ms_.push_back(overlapped_compute_ms_ >= 0 ? overlapped_compute_ms_
                                                      : wall - ep_ms_.back());
    hidden_ms_.push_back(overlapped_compute_ms_ >= 0 ? overlapped_hidden_ms_ : 0);
    overlapped_compute_ms_ = -1;
  };
  if constexpr (std::is_void_v<decltype(f())>) {
    f();
    record();
  } else {
    auto r = f();
    record();
    return r;
  }
}

Tensor PipelineStage::backward_input(int chunk, int mb, const Tensor& grad_output) {
  return timed([&] { return backward_untimed(chunk, mb, grad_output, /*defer_weights=*/true); });
}

void PipelineStage::backward_weight(int chunk, int mb) {
  timed([&] {
    const auto it = awaiting_w_.find({chunk, mb});
    EPX_CHECK(it != awaiting_w_.end(), Internal, "PipelineStage: W of chunk ", chunk,
              " micro-batch ", mb, " without its Bi");
    std::unique_ptr<model::Engine::Saved> s = std::move(it->second);
    awaiting_w_.erase(it);
    engines_.at(static_cast<std::size_t>(chunk))->weight_part(*s);
    spare_.push_back(std::move(s));
  });
}

Tensor PipelineStage::forward_backward(int f_chunk, int f_mb, const Tensor& input, int b_chunk,
                                       int b_mb, const Tensor& grad_output, Tensor& grad_input) {
  return timed([&] {
    if (worker_ && f_chunk != b_chunk)
      return forward_backward_overlapped(f_chunk, f_mb, input, b_chunk, b_mb, grad_output,
                                         grad_input);
    Tensor y = forward_untimed(f_chunk, f_mb, input);
    if (fb_unit_hook_) std::exchange(fb_unit_hook_, nullptr)();
    grad_input = backward_untimed(b_chunk, b_mb, grad_output, /*defer_weights=*/false);
    return y;
  });
}

Tensor PipelineStage::forward(int chunk, int mb, const Tensor& input) {
  return timed([&] { return forward_untimed(chunk, mb, input); });
}

Tensor PipelineStage::backward(int chunk, int mb, const Tensor& grad_output) {
  return timed([&] { return backward_untimed(chunk, mb, grad_output, /*defer_weights=*/false); });
}

std::vector<pipeline::OpTime> PipelineStage::take_comm_pieces() {
  std::vector<pipeline::OpTime> out;
  for (model::Engine* e : engines_)
    for (const model::Engine::CommPiece& p : e->take_comm_pieces())
      out.push_back({p.start_ms, p.end_ms});
  return out;
}

std::unique_ptr<model::Engine::Saved> PipelineStage::take_spare(int chunk) {
  if (spare_.empty()) return engines_.at(static_cast<std::size_t>(chunk))->make_saved();
  std::unique_ptr<model::Engine::Saved> s = std::move(spare_.back());
  spare_.pop_back();
  return s;
}

std::unique_ptr<model::Engine::Saved> PipelineStage::take_live(int chunk, int mb) {
  const auto it = live_.find({chunk, mb});
  EPX_CHECK(it != live_.end(), Internal, "PipelineStage: backward of chunk ", chunk,
            " micro-batch ", mb, " without its forward");
  std::unique_ptr<model::Engine::Saved> s = std::move(it->second);
  live_.erase(it);
  return s;
}

Tensor PipelineStage::run_forward(int chunk, int mb, const Tensor& input, model::Engine::Saved& s) {
  model::Engine& e = *engines_.at(static_cast<std::size_t>(chunk));
  const model::Model& m = e.model();
  const float* h_in = m.part().embed ? nullptr : input.data<float>();
  e.forward_part(s, micro_batch(mb), h_in, /*count=*/true);
  const std::vector<float>& out =
      m.part().head ? model::Engine::losses(s) : model::Engine::hidden(s);
  const std::int64_t T = static_cast<std::int64_t>(batch_) * seq_;
  Tensor y = m.part().head ? Tensor::empty({T}, DType::f32)
                           : Tensor::empty({T, m.config().hidden_size}, DType::f32);
  std::copy(out.begin(), out.begin() + y.numel(), y.data<float>());
  return y;
}

Tensor PipelineStage::run_backward(int chunk, int mb, const Tensor& grad_output,
                                   model::Engine::Saved& s, bool defer_weights) {
  model::Engine& e = *engines_.at(static_cast<std::size_t>(chunk));
  const model::Model& m = e.model();
  const float* g = m.part().head ? nullptr : grad_output.data<float>();
  e.backward_part(s, micro_batch(mb), g, loss_scale_, defer_weights);
  Tensor gx;
  if (!m.part().embed) {
    const std::int64_t T = static_cast<std::int64_t>(batch_) * seq_;
    gx = Tensor::empty({T, m.config().hidden_size}, DType::f32);
    const std::vector<float>& d = model::Engine::input_grad(s);
    std::copy(d.begin(), d.begin() + gx.numel(), gx.data<float>());
  }
  return gx;
}

void PipelineStage::backward_done(int chunk, int mb, std::unique_ptr<model::Engine::Saved> s,
                                  bool defer_weights) {
  if (defer_weights)
    awaiting_w_[{chunk, mb}] = std::move(s);
  else
    spare_.push_back(std::move(s));
}

Tensor PipelineStage::forward_untimed(int chunk, int mb, const Tensor& input) {
  std::unique_ptr<model::Engine::Saved> s = take_spare(chunk);
  Tensor y = run_forward(chunk, mb, input, *s);
  live_[{chunk, mb}] = std::move(s);
  return y;
}

Tensor PipelineStage::backward_untimed(int chunk, int mb, const Tensor& grad_output,
                                       bool defer_weights) {
  std::unique_ptr<model::Engine::Saved> s = take_live(chunk, mb);
  Tensor gx = run_backward(chunk, mb, grad_output, *s, defer_weights);
  backward_done(chunk, mb, std::move(s), defer_weights);
  return gx;
}

Tensor PipelineStage::forward_backward_overlapped(int f_chunk, int f_mb, const Tensor& input,
                                                  int b_chunk, int b_mb, const Tensor& grad_output,
                                                  Tensor& grad_input) {
  // The bookkeeping (maps of Saved) on this thread, before and after; in
  // between each half touches only its own Saved, engine, Buffer and model
  // chunk (the forward reads its weights, the backward adds to the other
  // chunk's gradients).
  std::unique_ptr<model::Engine::Saved> fs = take_spare(f_chunk);
  std::unique_ptr<model::Engine::Saved> bs = take_live(b_chunk, b_mb);
  model::ComputeTurn turn;
  model::Engine& fe = *engines_.at(static_cast<std::size_t>(f_chunk));
  model::Engine& be = *engines_.at(static_cast<std::size_t>(b_chunk));
  fe.set_compute_turn(&turn);
  be.set_compute_turn(&turn);
  struct Unset {
    model::Engine &f, &b;
    ~Unset() { f.set_compute_turn(nullptr), b.set_compute_turn(nullptr); }
  } unset{fe, be};
  std::function<void()> hook = std::exchange(fb_unit_hook_, nullptr);
  Tensor gx;
  worker_->run([&] {
    // The fault tests' hook stalls or ends this rank inside the unit, its
    // forward under way and its backward not started.
    if (hook) hook();
    model::ComputingScope computing(&turn);
    gx = run_backward(b_chunk, b_mb, grad_output, *bs, /*defer_weights=*/false);
  });
  Tensor y;
  try {
    model::ComputingScope computing(&turn);
    y = run_forward(f_chunk, f_mb, input, *fs);
  } catch (...) {
    // The worker holds references to this frame: it must be done first (its
    // comm fails fast once this rank's error has aborted the group).
    try {
      worker_->wait();
    } catch (...) {
    }
    throw;
  }
  worker_->wait();
  overlapped_compute_ms_ = turn.computing_ms();
  overlapped_hidden_ms_ = turn.hidden_ms();
  live_[{f_chunk, f_mb}] = std::move(fs);
  backward_done(b_chunk, b_mb, std::move(bs), /*defer_weights=*/false);
  grad_input = std::move(gx);
  return y;
}

std::vector<Tensor> PipelineStage::weight_grads(int chunk) {
  model::Model& m = engines_.at(static_cast<std::size_t>(chunk))->model();
  std::vector<Tensor> g;
  for (model::ParamStore* store : {&m.dense, &m.experts})
    if (!store->grads.empty())
      g.push_back(Tensor::wrap(store->grads.data(),
                               {static_cast<std::int64_t>(store->grads.size())}, DType::f32));
  return g;
}

}  // namespace epx::train
