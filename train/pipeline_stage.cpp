#include "train/pipeline_stage.hpp"

#include <algorithm>
#include <chrono>
#include <type_traits>
#include <utility>

#include "core/check.hpp"
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

PipelineStage::PipelineStage(std::vector<model::Engine*> engines, int batch, int seq)
    : engines_(std::move(engines)), batch_(batch), seq_(seq) {}

PipelineStage::~PipelineStage() = default;

void PipelineStage::begin_step(const std::vector<std::vector<std::int32_t>>* tokens,
                               const std::vector<std::vector<std::int32_t>>* targets,
                               float loss_scale) {
  tokens_ = tokens;
  targets_ = targets;
  loss_scale_ = loss_scale;
  times_.clear();
  ep_ms_.clear();
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

Tensor PipelineStage::forward_untimed(int chunk, int mb, const Tensor& input) {
  model::Engine& e = *engines_.at(static_cast<std::size_t>(chunk));
  std::unique_ptr<model::Engine::Saved> s;
  if (spare_.empty()) {
    s = e.make_saved();
  } else {
    s = std::move(spare_.back());
    spare_.pop_back();
  }
  const model::Model& m = e.model();
  const float* h_in = m.part().embed ? nullptr : input.data<float>();
  e.forward_part(*s, micro_batch(mb), h_in, /*count=*/true);
  const std::vector<float>& out =
      m.part().head ? model::Engine::losses(*s) : model::Engine::hidden(*s);
  const std::int64_t T = static_cast<std::int64_t>(batch_) * seq_;
  Tensor y = m.part().head ? Tensor::empty({T}, DType::f32)
                           : Tensor::empty({T, m.config().hidden_size}, DType::f32);
  std::copy(out.begin(), out.begin() + y.numel(), y.data<float>());
  live_[{chunk, mb}] = std::move(s);
  return y;
}

Tensor PipelineStage::backward_untimed(int chunk, int mb, const Tensor& grad_output,
                                       bool defer_weights) {
  model::Engine& e = *engines_.at(static_cast<std::size_t>(chunk));
  const auto it = live_.find({chunk, mb});
  EPX_CHECK(it != live_.end(), Internal, "PipelineStage: backward of chunk ", chunk,
            " micro-batch ", mb, " without its forward");
  std::unique_ptr<model::Engine::Saved> s = std::move(it->second);
  live_.erase(it);
  const model::Model& m = e.model();
  const float* g = m.part().head ? nullptr : grad_output.data<float>();
  e.backward_part(*s, micro_batch(mb), g, loss_scale_, defer_weights);
  Tensor gx;
  if (!m.part().embed) {
    const std::int64_t T = static_cast<std::int64_t>(batch_) * seq_;
    gx = Tensor::empty({T, m.config().hidden_size}, DType::f32);
    const std::vector<float>& d = model::Engine::input_grad(*s);
    std::copy(d.begin(), d.begin() + gx.numel(), gx.data<float>());
  }
  if (defer_weights) {
    awaiting_w_[{chunk, mb}] = std::move(s);
  } else {
    spare_.push_back(std::move(s));
  }
  return gx;
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
