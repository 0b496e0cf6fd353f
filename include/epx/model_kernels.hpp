// epx::kernels, the model's ops: forward and backward of every op of the
// DeepSeek-V3-style decoder that epx-train and epx-serve run (docs/train.md).
//
// Conventions (llm.c's): plain f32 row-major arrays, shapes as arguments.
// Weights follow torch.nn.Linear: w [out, in], y = x w^T. A backward writes
// the gradient of its input with `accumulate` saying whether it adds (+=) or
// overwrites, and always ADDS (+=) into parameter gradients, so that
// micro-batches accumulate. No op allocates on the hot path except where its
// comment says so. Every loop sums in the order written, and the same BLAS
// call with the same shapes and thread count gives the same bits, so a run is
// reproducible; OpenBLAS does round a row differently when the call has other
// shapes or threads, so results on another grid or thread count agree only to
// f32 rounding (docs/train.md). GEMMs go through cblas_sgemm (OpenBLAS); its
// thread count is set with set_num_threads().
#pragma once

#include <cstdint>

#include <epx/config.hpp>

namespace epx::kernels {

// Threads used by BLAS and the threaded loops of this header (>= 1).
EPX_API void set_num_threads(int threads);
EPX_API int num_threads() noexcept;

// ---------------------------------------------------------------- linear
// y [n,out] = x [n,in] w^T (w [out,in]); accumulate: y += instead of y =.
EPX_API void linear_forward(float* y, const float* x, const float* w, std::int64_t n,
                            std::int64_t in, std::int64_t out, bool accumulate = false);
// One row of it as a matrix-vector product (cblas_sgemv), for decode:
// OpenBLAS's sgemm packs w even for one row, and sgemv, which streams it
// once, ran 2x faster on 96 MiB of weights (1 thread). Not the same bits as
// linear_forward's row: a caller that needs rows to agree uses one of the
// two for all of them.
EPX_API void linear_forward_row(float* y, const float* x, const float* w, std::int64_t in,
                                std::int64_t out, bool accumulate = false);
// dx [n,in] (+)= dy [n,out] w.
EPX_API void linear_backward_input(float* dx, const float* dy, const float* w, std::int64_t n,
                                   std::int64_t in, std::int64_t out, bool accumulate);
// dw [out,in] += dy^T x.
EPX_API void linear_backward_weight(float* dw, const float* dy, const float* x, std::int64_t n,
                                    std::int64_t in, std::int64_t out);

// ---------------------------------------------------------------- RMSNorm
// y = x * rsqrt(mean(x^2) + eps) * w, per row of h. rstd [n] is saved for the
// backward: rstd = 1 / sqrtf(sum_i(x_i^2) / h + eps), the sum in i order in f32.
EPX_API void rmsnorm_forward(float* y, float* rstd, const float* x, const float* w,
                             std::int64_t n, std::int64_t h, float eps);
// dx (+)= , dw += .
EPX_API void rmsnorm_backward(float* dx, float* dw, const float* dy, const float* x,
                              const float* w, const float* rstd, std::int64_t n, std::int64_t h,
                              bool accumulate);

// ---------------------------------------------------------------- RoPE
// In place on x [rows, heads * head_dim] (head_dim even), rotate-half layout
// as HF Llama: for pair j < head_dim/2 of each head, with x1 = x[j],
// x2 = x[j + head_dim/2] and angle a = positions[row] * inv_freq_j,
//   inv_freq_j = 1.0f / powf(theta, (float)(2 j) / (float)head_dim)  (f32),
//   a = (float)positions[row] * inv_freq_j                          (f32),
//   x[j] = x1 cosf(a) - x2 sinf(a),  x[j + head_dim/2] = x2 cosf(a) + x1 sinf(a).
EPX_API void rope_forward(float* x, const std::int32_t* positions, std::int64_t rows,
                          std::int64_t heads, std::int64_t head_dim, float theta);
// In place on dx: the transpose (rotation by -a), the exact gradient of the above.
EPX_API void rope_backward(float* dx, const std::int32_t* positions, std::int64_t rows,
                           std::int64_t heads, std::int64_t head_dim, float theta);

// ---------------------------------------------------------------- attention
// Causal multi-head attention over `batch` sequences of `seq` tokens.
// q, k, v, out: [batch * seq, heads * head_dim] (head h in columns
// [h*head_dim, (h+1)*head_dim)). For each sequence and head:
//   s_ij = (q_i . k_j) * (1 / sqrtf(head_dim)) for j <= i,
//   p_ij = expf(s_ij - max_j s_ij) / sum_j expf(s_ij - max_j s_ij),
//   out_i = sum_j p_ij v_j.
// probs [batch, heads, seq, seq] is saved for the backward (p_ij, 0 for j > i).
EPX_API void attention_forward(float* out, float* probs, const float* q, const float* k,
                               const float* v, std::int64_t batch, std::int64_t seq,
                               std::int64_t heads, std::int64_t head_dim);
// dq, dk, dv: written (not accumulated). dout, q, k, v, probs as in the forward.
// scratch: at least attention_backward_scratch(seq) floats.
EPX_API void attention_backward(float* dq, float* dk, float* dv, const float* dout,
                                const float* q, const float* k, const float* v,
                                const float* probs, std::int64_t batch, std::int64_t seq,
                                std::int64_t heads, std::int64_t head_dim, float* scratch);
EPX_API std::int64_t attention_backward_scratch(std::int64_t seq) noexcept;

// ---------------------------------------------------------------- SwiGLU
// Element-wise: h = silu(g) * u, silu(g) = g / (1 + expf(-g)), n elements.
EPX_API void swiglu_forward(float* h, const float* g, const float* u, std::int64_t n);
// dg, du written (not accumulated) from dh and the saved g, u.
EPX_API void swiglu_backward(float* dg, float* du, const float* dh, const float* g,
                             const float* u, std::int64_t n);

// A SwiGLU MLP, y = down(silu(gate(x)) * up(x)): x [n,hidden], gate/up
// [inter,hidden], down [hidden,inter], y [n,hidden]. `saved` holds g, u and h
// ([n, 3*inter] floats: g, then u, then h, each [n,inter] contiguous) for the
// backward. accumulate: y += instead of y =.
struct MlpWeights {
  const float* gate;
  const float* up;
  const float* down;
  std::int64_t hidden;
  std::int64_t inter;
};
struct MlpGrads {
  float* gate;
  float* up;
  float* down;
};
EPX_API void mlp_forward(float* y, float* saved, const float* x, std::int64_t n,
                         const MlpWeights& w, bool accumulate = false);
// mlp_forward of one row with its three products by linear_forward_row.
EPX_API void mlp_forward_row(float* y, float* saved, const float* x, const MlpWeights& w,
                             bool accumulate = false);
// dx (+)= ; weight grads +=. scratch: at least 3 * n * inter floats.
EPX_API void mlp_backward(float* dx, const MlpGrads& dw, const float* dy, const float* x,
                          const float* saved, std::int64_t n, const MlpWeights& w,
                          float* scratch, bool accumulate);
// mlp_backward cut in two for the zero-bubble schedules, whose weight
// gradients run later than the input gradient: the input half, dx (+)=,
// leaves dg and du in dgu ([n, 2*inter]: dg, then du, each [n,inter]
// contiguous); the weight half, dw +=, reads dy, x, saved and that dgu. The
// two in turn give mlp_backward's results bit for bit. dh_scratch: at least
// n * inter floats.
EPX_API void mlp_backward_input(float* dx, float* dgu, const float* dy, const float* saved,
                                std::int64_t n, const MlpWeights& w, float* dh_scratch,
                                bool accumulate);
EPX_API void mlp_backward_weight(const MlpGrads& dw, const float* dy, const float* x,
                                 const float* saved, const float* dgu, std::int64_t n,
                                 const MlpWeights& w);

// The routed experts as a grouped GEMM: group e (0 <= e < num_groups) is
// mlp_forward over rows [offsets[e], offsets[e+1]) of x with weights w[e]
// (offsets has num_groups + 1 entries, ascending, offsets[0] = 0). saved
// holds [offsets[num_groups], 3*inter] floats laid out per group as
// mlp_forward's (group e's block starts at float offsets[e] * 3 * inter).
// Every group has the same hidden and inter. Empty groups do nothing.
EPX_API void grouped_mlp_forward(float* y, float* saved, const float* x,
                                 const std::int64_t* offsets, int num_groups,
                                 const MlpWeights* w);
// dx (+)= ; dw[e] +=. scratch: at least 3 * max_e(rows of e) * inter floats.
EPX_API void grouped_mlp_backward(float* dx, const MlpGrads* dw, const float* dy, const float* x,
                                  const float* saved, const std::int64_t* offsets, int num_groups,
                                  const MlpWeights* w, float* scratch, bool accumulate);
// grouped_mlp_backward cut in two as mlp_backward is: dgu holds
// [offsets[num_groups], 2*inter] floats laid out per group as
// mlp_backward_input's (group e's block starts at float offsets[e] * 2 *
// inter); dh_scratch: at least max_e(rows of e) * inter floats.
EPX_API void grouped_mlp_backward_input(float* dx, float* dgu, const float* dy, const float* saved,
                                        const std::int64_t* offsets, int num_groups,
                                        const MlpWeights* w, float* dh_scratch, bool accumulate);
EPX_API void grouped_mlp_backward_weight(const MlpGrads* dw, const float* dy, const float* x,
                                         const float* saved, const float* dgu,
                                         const std::int64_t* offsets, int num_groups,
                                         const MlpWeights* w);

// ---------------------------------------------------------------- router
// DeepSeek-V3 routing. logits = x W_r^T [n,E] (computed by the caller).
//   s = sigmoid(logits) (or softmax over E with softmax = true), per row;
//   selection on s + bias: with n_group > 1 the experts form n_group groups of
//   E / n_group consecutive experts; a group's score is the sum of its two
//   highest (s + bias) (the higher first); the topk_group best groups stay
//   (ties: lower group index); then the top_k experts of the kept groups by
//   (s + bias) (ties: lower expert index). n_group <= 1: top_k over all E.
//   topk_idx [n,top_k] lists them by descending s + bias (ties: lower index).
//   weights: w_k = s[idx_k] / S * routed_scaling_factor, with S the sum of
//   s[idx_k] in k order (f32): first w_k = s_k / S, then * factor.
// scores [n,E] keeps s for the backward.
struct RouterParams {
  int num_experts = 0;
  int top_k = 0;
  int n_group = 1;
  int topk_group = 1;
  bool softmax = false;  // score_function: softmax (default sigmoid)
  float routed_scaling_factor = 1.0f;
};
EPX_API void router_forward(std::int64_t* topk_idx, float* topk_weights, float* scores,
                            const float* logits, const float* bias, std::int64_t n,
                            const RouterParams& p);
// dlogits [n,E] written (not accumulated) from d(topk_weights) [n,top_k];
// the bias gets no gradient and the selection is treated as constant.
EPX_API void router_backward(float* dlogits, const float* dweights, const float* scores,
                             const std::int64_t* topk_idx, std::int64_t n, const RouterParams& p);

// ---------------------------------------------------------------- loss
// losses[i] = logsumexp(logits_i) - logits_i[target_i] for each of n rows of
// V; lse [n] saved. logsumexp = m + logf(sum_j expf(l_j - m)), m = max_j l_j,
// sums in j order in f32.
EPX_API void cross_entropy_forward(float* losses, float* lse, const float* logits,
                                   const std::int32_t* targets, std::int64_t n, std::int64_t vocab);
// dlogits [n,V] written: (expf(l_j - lse_i) - [j == target_i]) * scale. May
// alias logits (in place).
EPX_API void cross_entropy_backward(float* dlogits, const float* logits, const float* lse,
                                    const std::int32_t* targets, std::int64_t n,
                                    std::int64_t vocab, float scale);

// ---------------------------------------------------------------- embedding
// out [n,h] = table[tokens[i]] (table [V,h]); tokens are checked by the caller.
EPX_API void embedding_forward(float* out, const float* table, const std::int32_t* tokens,
                               std::int64_t n, std::int64_t h);
// dtable[tokens[i]] += dout[i], for i ascending.
EPX_API void embedding_backward(float* dtable, const float* dout, const std::int32_t* tokens,
                                std::int64_t n, std::int64_t h);

// ---------------------------------------------------------------- AdamW
// One step of torch.optim.AdamW for n elements, every value f32:
//   p *= decay;  m = beta1 m + (1 - beta1) g;  v = beta2 v + (1 - beta2) g^2;
//   p -= step_size * (m / (sqrtf(v) / bias_correction2_sqrt + eps)).
// The caller computes the scalars in double and rounds them once to f32:
//   decay = 1 - lr_t * weight_decay (1 for parameters without decay),
//   step_size = lr_t / (1 - beta1^t),  bias_correction2_sqrt = sqrt(1 - beta2^t).
struct AdamWScalars {
  float beta1;
  float beta2;
  float one_minus_beta1;
  float one_minus_beta2;
  float eps;
  float decay;
  float step_size;
  float bias_correction2_sqrt;
};
// Computes AdamWScalars for step t (from 1) as above.
EPX_API AdamWScalars adamw_scalars(double lr_t, double beta1, double beta2, double eps,
                                   double weight_decay, std::int64_t t);
EPX_API void adamw_step(float* p, float* m, float* v, const float* g, std::int64_t n,
                        const AdamWScalars& s);

}  // namespace epx::kernels
