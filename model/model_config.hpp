// The model's shape and hyper-parameters: the `model:` section of an
// epx-train config (names follow DeepSeek-V3's HF config.json where it has one).
#pragma once

#include <string>

namespace epx::model {

struct ModelConfig {
  int vocab_size = 256;
  int hidden_size = 64;
  int num_layers = 2;             // L
  int num_heads = 4;
  int intermediate_size = 128;    // dense SwiGLU
  int first_k_dense = 1;          // the first layers with a dense FFN
  int num_experts = 8;            // routed experts per MoE layer (E)
  int num_shared_experts = 1;     // S: one shared expert of size S * moe_intermediate_size
  int moe_intermediate_size = 32;
  int top_k = 2;
  int n_group = 1;
  int topk_group = 1;
  std::string score_function = "sigmoid";  // sigmoid | softmax
  double routed_scaling_factor = 1.0;
  double bias_update_rate = 0.001;  // aux-loss-free bias step (0: off)
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  double init_std = 0.02;
  std::string init_from;  // a safetensors file, or empty: initialise from train.seed
  int head_dim() const { return hidden_size / num_heads; }
};

}  // namespace epx::model
