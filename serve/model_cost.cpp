#include "serve/model_cost.hpp"

#include <algorithm>

#include <nlohmann/json.hpp>

namespace epx::serve {

ModelCost model_cost(const model::ModelConfig& c) {
  const std::int64_t H = c.hidden_size, V = c.vocab_size, L = c.num_layers, E = c.num_experts;
  const std::int64_t I = c.intermediate_size, Im = c.moe_intermediate_size;
  const std::int64_t Is = static_cast<std::int64_t>(c.num_shared_experts) * Im;
  const std::int64_t dense_layers = std::min<std::int64_t>(c.first_k_dense, L);
  const std::int64_t moe_layers = L - dense_layers;
  const std::int64_t attention = 4 * H * H;  // q, k, v, o
  const std::int64_t dense_ffn = 3 * H * I;
  const std::int64_t expert = 3 * H * Im;
  const std::int64_t moe_shared = 3 * H * Is;
  const std::int64_t router = H * E;
  const std::int64_t norms = 2 * H * L + H;
  // Active multiply-adds per token, LM head apart.
  const std::int64_t active = L * attention + dense_layers * dense_ffn +
                              moe_layers * (router + c.top_k * expert + moe_shared);
  const std::int64_t total = V * H + L * attention + dense_layers * dense_ffn +
                             moe_layers * (router + E * expert + moe_shared) + norms + H * V;
  ModelCost m;
  m.total_weight_bytes = total * 4 + moe_layers * E * 4;  // + the routers' biases
  m.active_weight_bytes = (active + norms + H + H * V) * 4;
  m.kv_bytes_per_position = 2 * L * H * 4;
  m.matmul_flops_per_token = 2 * active;
  m.lm_head_flops = 2 * H * V;
  m.attention_flops_per_context = 4 * L * H;
  return m;
}

std::string models_json(const std::string& name, const model::ModelConfig& c, int ranks) {
  const ModelCost m = model_cost(c);
  nlohmann::json epx = {{"ranks", ranks},
                        {"vocab_size", c.vocab_size},
                        {"hidden_size", c.hidden_size},
                        {"num_layers", c.num_layers},
                        {"num_heads", c.num_heads},
                        {"intermediate_size", c.intermediate_size},
                        {"first_k_dense", c.first_k_dense},
                        {"num_experts", c.num_experts},
                        {"num_shared_experts", c.num_shared_experts},
                        {"moe_intermediate_size", c.moe_intermediate_size},
                        {"top_k", c.top_k},
                        {"total_weight_bytes", m.total_weight_bytes},
                        {"active_weight_bytes", m.active_weight_bytes},
                        {"kv_bytes_per_position", m.kv_bytes_per_position},
                        {"matmul_flops_per_token", m.matmul_flops_per_token},
                        {"lm_head_flops", m.lm_head_flops},
                        {"attention_flops_per_context", m.attention_flops_per_context}};
  nlohmann::json entry = {{"id", name}, {"object", "model"}, {"owned_by", "epx"}, {"epx", epx}};
  return nlohmann::json{{"object", "list"}, {"data", nlohmann::json::array({entry})}}.dump();
}

}  // namespace epx::serve
