// The optimizer step of docs/train.md: the learning-rate schedule, the
// global gradient norm and clipping, AdamW (torch.optim.AdamW's order) and
// the aux-loss-free bias update.
#pragma once

#include <cstdint>
#include <vector>

#include "model/model.hpp"
#include "train/config.hpp"

namespace epx::train {

// lr_t for step t (from 1): linear warm-up over warmup_steps, then a cosine
// from lr to min_lr at max_steps.
double learning_rate(const TrainConfig& train, std::int64_t t);

// Sum of squares of a store's gradients, in parameter order, in double.
double grad_sq_sum(const model::ParamStore& store);

// grads *= coef in f32, for clipping: coef = min(1, grad_clip / (norm + 1e-6)).
double clip_coefficient(double grad_clip, double norm);
void scale_grads(model::ParamStore& store, float coef);

// One AdamW step of every parameter of `store` (2-D ones with weight decay).
void adamw_update(model::ParamStore& store, const TrainConfig& train, double lr_t, std::int64_t t);

// b_e += rate * sign(mean(c) - c_e) per MoE layer, c = the global batch's
// tokens per expert, mean(c) = sum(c) / E in double, sign(0) = 0.
void update_bias(model::Model& model, const std::vector<std::vector<std::int64_t>>& counts,
                 double rate);

}  // namespace epx::train
