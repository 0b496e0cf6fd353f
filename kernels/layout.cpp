#include "kernels/layout.hpp"

#include <algorithm>
#include <vector>

namespace epx::kernels {

void compute_dispatch_layout(const LayoutArgs& a) {
  const int R = a.num_ranks, K = a.num_topk;
  const int experts_per_rank = a.num_experts / R;
  std::fill(a.tokens_per_rank, a.tokens_per_rank + R, 0);
  std::fill(a.tokens_per_node, a.tokens_per_node + a.num_nodes, 0);
  std::fill(a.tokens_per_expert, a.tokens_per_expert + a.num_experts, 0);
  std::vector<char> node_hit(a.num_nodes);
  for (std::int64_t t = 0; t < a.num_tokens; ++t) {
    bool* in_rank = a.token_in_rank + t * R;
    std::fill(in_rank, in_rank + R, false);
    std::fill(node_hit.begin(), node_hit.end(), 0);
    for (int k = 0; k < K; ++k) {
      const std::int64_t e = a.topk_idx[t * K + k];
      if (e < 0) continue;
      ++a.tokens_per_expert[e];
      in_rank[e / experts_per_rank] = true;
    }
    for (int r = 0; r < R; ++r) {
      if (!in_rank[r]) continue;
      ++a.tokens_per_rank[r];
      node_hit[a.node_of_rank[r]] = 1;
    }
    for (int n = 0; n < a.num_nodes; ++n) a.tokens_per_node[n] += node_hit[n];
  }
}

}  // namespace epx::kernels
