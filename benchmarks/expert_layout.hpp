// What a caller of normal mode does to get what low-latency mode hands out,
// for a fair comparison in `epx-bench low-latency`:
//  - after dispatch, group the received rows by local expert ([E_local,
//    slots, H], rows in receive order: source rank, then token), the layout
//    a grouped GEMM wants and low-latency dispatch returns;
//  - before combine, reduce each received row's expert outputs with its gate
//    weights (low-latency combine applies the weights itself).
// Plain loops, as a user would write them.
#pragma once

#include <cstdint>
#include <vector>

#include <epx/tensor.hpp>

namespace epx::bench {

class ExpertLayout {
 public:
  // Room for `slots` rows per local expert of `hidden` channels.
  ExpertLayout(int local_experts, std::int64_t slots, std::int64_t hidden);

  // x [M,H] (any dtype), x_scales [M,H/128] f32 or undefined, topk_idx [M,K]
  // local ids (-1: elsewhere). Copies each (row, local expert) pair to the
  // expert's next slot; remembers each pair's slot for reduce().
  void permute(const Tensor& x, const Tensor& x_scales, const Tensor& topk_idx);

  // out[m] = bf16(sum over k of topk_weights[m,k] * expert_out[e_k][slot]),
  // f32 products and sums in k order; expert_out [E_local, slots, H] bf16.
  void reduce(const Tensor& expert_out, const Tensor& topk_weights, Tensor& out) const;

 private:
  int local_experts_;
  std::int64_t slots_, hidden_;
  std::vector<std::uint8_t> rows_;   // [E_local, slots, H * dtype size]
  std::vector<float> scales_;        // [E_local, slots, H/128]
  std::vector<std::int64_t> count_;  // per local expert
  std::vector<std::int64_t> slot_;   // [M*K]: each pair's row in the layout (e * slots + s), or -1
};

}  // namespace epx::bench
