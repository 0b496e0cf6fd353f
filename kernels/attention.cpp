// Causal multi-head attention, one (sequence, head) at a time: the products
// are strided GEMMs straight on the [tokens, heads * head_dim] layout (lda =
// heads * head_dim), the softmax is a loop over the saved [seq, seq] block.
#include <cmath>

#include <epx/model_kernels.hpp>

#include "core/check.hpp"
#include "kernels/gemm.hpp"
#include "kernels/softmax.hpp"

namespace epx::kernels {

void attention_forward(float* out, float* probs, const float* q, const float* k, const float* v,
                       std::int64_t batch, std::int64_t seq, std::int64_t heads,
                       std::int64_t head_dim) {
  if (batch == 0 || seq == 0 || heads == 0) return;
  EPX_CHECK(head_dim > 0, InvalidArgument, "attention_forward: head_dim = ", head_dim,
            ", expected > 0");
  const std::int64_t ld = heads * head_dim;
  const float scale = 1.0f / sqrtf(static_cast<float>(head_dim));
  for (std::int64_t b = 0; b < batch; ++b) {
    for (std::int64_t h = 0; h < heads; ++h) {
      const std::int64_t base = b * seq * ld + h * head_dim;
      float* p = probs + (b * heads + h) * seq * seq;
      // s = (q k^T) * scale over the whole block (the upper half is cheaper
      // to compute in the GEMM than to avoid, and is overwritten with 0).
      sgemm(false, true, seq, seq, head_dim, 1.0f, q + base, ld, k + base, ld, 0.0f, p, seq);
      for (std::int64_t i = 0; i < seq; ++i) {
        float* row = p + i * seq;
        for (std::int64_t j = 0; j <= i; ++j) row[j] = row[j] * scale;
        softmax(row, row, i + 1);
        for (std::int64_t j = i + 1; j < seq; ++j) row[j] = 0.0f;
      }
      sgemm(false, false, seq, head_dim, seq, 1.0f, p, seq, v + base, ld, 0.0f, out + base, ld);
    }
  }
}

std::int64_t attention_backward_scratch(std::int64_t seq) noexcept { return seq * seq; }

// With P the probabilities, dO the output gradient, per (sequence, head):
//   dV = P^T dO,  dP = dO V^T,  dS_ij = p_ij (dP_ij - sum_k p_ik dP_ik),
//   dQ = scale dS K,  dK = scale dS^T Q.
void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q,
                        const float* k, const float* v, const float* probs, std::int64_t batch,
                        std::int64_t seq, std::int64_t heads, std::int64_t head_dim,
                        float* scratch) {
  if (batch == 0 || seq == 0 || heads == 0) return;
  EPX_CHECK(head_dim > 0, InvalidArgument, "attention_backward: head_dim = ", head_dim,
            ", expected > 0");
  const std::int64_t ld = heads * head_dim;
  const float scale = 1.0f / sqrtf(static_cast<float>(head_dim));
  float* ds = scratch;
  for (std::int64_t b = 0; b < batch; ++b) {
    for (std::int64_t h = 0; h < heads; ++h) {
      const std::int64_t base = b * seq * ld + h * head_dim;
      const float* p = probs + (b * heads + h) * seq * seq;
      sgemm(true, false, seq, head_dim, seq, 1.0f, p, seq, dout + base, ld, 0.0f, dv + base, ld);
      sgemm(false, true, seq, seq, head_dim, 1.0f, dout + base, ld, v + base, ld, 0.0f, ds, seq);
      for (std::int64_t i = 0; i < seq; ++i) {
        const float* pr = p + i * seq;
        float* dr = ds + i * seq;
        float dot = 0.0f;
        for (std::int64_t j = 0; j <= i; ++j) dot += pr[j] * dr[j];
        for (std::int64_t j = 0; j <= i; ++j) dr[j] = pr[j] * (dr[j] - dot);
        for (std::int64_t j = i + 1; j < seq; ++j) dr[j] = 0.0f;
      }
      sgemm(false, false, seq, head_dim, seq, scale, ds, seq, k + base, ld, 0.0f, dq + base, ld);
      sgemm(true, false, seq, head_dim, seq, scale, ds, seq, q + base, ld, 0.0f, dk + base, ld);
    }
  }
}

}  // namespace epx::kernels
