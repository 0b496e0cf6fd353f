// Routing counts of a top-k assignment: how many tokens go to each rank,
// node and expert. A token counts once per rank (and node) however many of
// its experts live there; -1 means "no expert".
#pragma once

#include <cstdint>

namespace epx::kernels {

struct LayoutArgs {
  const std::int64_t* topk_idx = nullptr;  // [num_tokens, num_topk], ids valid (checked before)
  std::int64_t num_tokens = 0;
  int num_topk = 0;
  int num_experts = 0;
  int num_ranks = 1;                // experts [r*E/R, (r+1)*E/R) live on rank r
  const int* node_of_rank = nullptr;  // [num_ranks]
  int num_nodes = 1;
  std::int32_t* tokens_per_rank = nullptr;    // [num_ranks], out
  std::int32_t* tokens_per_node = nullptr;    // [num_nodes], out
  std::int32_t* tokens_per_expert = nullptr;  // [num_experts], out
  bool* token_in_rank = nullptr;              // [num_tokens, num_ranks], out
};

void compute_dispatch_layout(const LayoutArgs& args);

}  // namespace epx::kernels
