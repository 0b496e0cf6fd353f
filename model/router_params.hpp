// The router's kernel parameters from the model config (DeepSeek-V3
// routing, docs/train.md), for the forwards that route tokens.
#pragma once

#include <epx/model_kernels.hpp>

#include "model/model_config.hpp"

namespace epx::model {

inline kernels::RouterParams router_params(const ModelConfig& c) {
  kernels::RouterParams p;
  p.num_experts = c.num_experts;
  p.top_k = c.top_k;
  p.n_group = c.n_group;
  p.topk_group = c.topk_group;
  p.softmax = c.score_function == "softmax";
  p.routed_scaling_factor = static_cast<float>(c.routed_scaling_factor);
  return p;
}

}  // namespace epx::model
