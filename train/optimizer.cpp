#include "train/optimizer.hpp"

#include <algorithm>
#include <cmath>
#include <numbers>

#include <epx/model_kernels.hpp>

namespace epx::train {

double learning_rate(const TrainConfig& c, std::int64_t t) {
  if (c.warmup_steps > 0 && t <= c.warmup_steps)
    return c.lr * static_cast<double>(t) / c.warmup_steps;
  const double span = static_cast<double>(c.max_steps - c.warmup_steps);
  if (span <= 0) return c.lr;
  const double progress = std::min(1.0, static_cast<double>(t - c.warmup_steps) / span);
  return c.min_lr + 0.5 * (c.lr - c.min_lr) * (1.0 + std::cos(std::numbers::pi * progress));
}

double grad_sq_sum(const model::ParamStore& store) {
  double s = 0;
  for (const float g : store.grads) s += static_cast<double>(g) * g;
  return s;
}

double clip_coefficient(double grad_clip, double norm) {
  if (grad_clip <= 0) return 1.0;
  return std::min(1.0, grad_clip / (norm + 1e-6));
}

void scale_grads(model::ParamStore& store, float coef) {
  if (coef == 1.0f) return;
  for (float& g : store.grads) g *= coef;
}

void adamw_update(model::ParamStore& store, const TrainConfig& c, double lr_t, std::int64_t t) {
  const kernels::AdamWScalars decayed =
      kernels::adamw_scalars(lr_t, c.beta1, c.beta2, c.eps, c.weight_decay, t);
  const kernels::AdamWScalars plain = kernels::adamw_scalars(lr_t, c.beta1, c.beta2, c.eps, 0.0, t);
  for (const model::ParamInfo& p : store.params()) {
    const std::size_t o = static_cast<std::size_t>(p.offset);
    kernels::adamw_step(store.values.data() + o, store.exp_avg.data() + o,
                        store.exp_avg_sq.data() + o, store.grads.data() + o, p.numel,
                        p.decay ? decayed : plain);
  }
}

void update_bias(model::Model& model, const std::vector<std::vector<std::int64_t>>& counts,
                 double rate) {
  const float step = static_cast<float>(rate);
  for (std::size_t l = 0; l < counts.size(); ++l) {
    const auto& c = counts[l];
    double sum = 0;
    for (const std::int64_t x : c) sum += static_cast<double>(x);
    const double mean = sum / static_cast<double>(c.size());
    for (std::size_t e = 0; e < c.size(); ++e) {
      const double d = mean - static_cast<double>(c[e]);
      const float sign = d > 0 ? 1.0f : d < 0 ? -1.0f : 0.0f;
      model.bias[l][e] += step * sign;
    }
  }
}

}  // namespace epx::train
