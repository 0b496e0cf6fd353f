// What one token of the model costs: the matmul FLOPs and the weight bytes
// that a forward reads, from the config alone (f32 weights, as the engine
// holds them). epx-serve reports them on GET /v1/models so that a client
// (epx-bench serve) can put its measured prefill and decode speeds against
// the machine's GEMM peak and memory bandwidth, whatever the grid: the totals
// do not depend on which rank holds which expert.
#pragma once

#include <cstdint>
#include <string>

#include "model/model_config.hpp"

namespace epx::serve {

struct ModelCost {
  std::int64_t total_weight_bytes = 0;  // every parameter (all experts), f32
  // Weights one token reads in a forward: attention, the dense FFNs, the
  // routers, top_k routed experts and the shared ones per MoE layer, the
  // norms, one embedding row and the LM head (every decode token has logits).
  std::int64_t active_weight_bytes = 0;
  std::int64_t kv_bytes_per_position = 0;  // keys and values of every layer
  // 2 x the multiply-adds of one token's linear layers, the LM head left out
  // (a prompt computes logits at its last position only).
  std::int64_t matmul_flops_per_token = 0;
  std::int64_t lm_head_flops = 0;  // 2 H V, once per position with logits
  // Attention of a position p over positions 0..p: this many FLOPs x (p + 1)
  // (q.k and the weighted sum of v, every layer).
  std::int64_t attention_flops_per_context = 0;
};

ModelCost model_cost(const model::ModelConfig& c);

// The body of GET /v1/models: OpenAI's model list with one entry, `name`,
// extended with the config's shape, the rank count and the cost above
// ("epx": {...}).
std::string models_json(const std::string& name, const model::ModelConfig& c, int ranks);

}  // namespace epx::serve
