// What one micro-batch's forward keeps for its backward, per layer
// (internal to model/engine*.cpp and the block files).
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include <epx/comm.hpp>
#include <epx/model_kernels.hpp>

#include "model/engine.hpp"

namespace epx::model {

struct NormSaved {
  std::vector<float> x;     // [T,H] the sublayer's input (the residual stream)
  std::vector<float> rstd;  // [T]
  std::vector<float> xn;    // [T,H] the normed input
};

struct AttentionSaved {
  NormSaved norm;
  std::vector<float> q, k, v;  // [T,H] after RoPE (q, k)
  std::vector<float> probs;    // [B, heads, S, S]
  std::vector<float> a;        // [T,H] attention output before o_proj
};

struct DenseFfnSaved {
  NormSaved norm;
  std::vector<float> mlp;  // [T, 3 I]
};

struct MoeSaved {
  NormSaved norm;
  std::vector<float> scores;          // [T,E]
  std::vector<std::int64_t> topk_idx;  // [T,K] logical experts
  std::vector<float> topk_weights;    // [T,K]
  std::vector<float> shared;          // [T, 3 Is] the shared expert's saved values
  comm::Handle handle;                // the forward dispatch's routing
  std::int64_t recv = 0;              // M: rows this rank received
  std::vector<float> recv_weights;    // [M,K] gate weights of the received rows (0: elsewhere)
  std::vector<std::int64_t> pair_of;  // [M,K]: row of (m, k) in the expert blocks, -1 if not here
  std::vector<std::int64_t> pair_row; // [P]: received row m of each block row
  std::vector<std::int64_t> offsets;  // [E_local + 1] block starts
  std::vector<float> xp;              // [P,H] the experts' input rows, by expert then row
  std::vector<float> mlp;             // [P, 3 Im]
  std::vector<float> outp;            // [P,H] expert outputs
};

// The zero-bubble split (Engine::backward_part with defer_weights): a
// micro-batch's weight-gradient GEMMs, held back until Engine::weight_part
// runs them in the order the backward met them. What a job reads must
// outlive the backward: the Saved's activations stay put; work arrays the
// backward goes on to overwrite (output gradients, the MLPs' dg and du) are
// copied into buffers owned here, which are reused from micro-batch to
// micro-batch.
struct DeferredWeightGrads {
  std::vector<std::function<void()>> jobs;
  std::vector<std::vector<float>> buffers;
  std::size_t used = 0;
  // A buffer of n floats that lives until run().
  float* take(std::int64_t n);
  // A copy of src[0, n) that lives until run().
  const float* keep(const float* src, std::int64_t n);
  // Runs the jobs in order and drops them (the buffers stay for reuse).
  void run();
};

struct Engine::Saved {
  int batch = 0, seq = 0;
  std::int64_t tokens = 0;           // T = batch * seq
  std::vector<std::int32_t> positions;  // [T] RoPE positions
  std::vector<AttentionSaved> attention;  // per layer
  std::vector<DenseFfnSaved> dense;       // per layer (dense layers only)
  std::vector<MoeSaved> moe;              // per layer (MoE layers only)
  NormSaved final_norm;
  // Set by backward_part for a zero-bubble Bi, whose weight GEMMs wait in
  // `deferred` until weight_part.
  bool defer_weights = false;
  DeferredWeightGrads deferred;
  DeferredWeightGrads* held() { return defer_weights ? &deferred : nullptr; }
  std::vector<float> logits;  // [T,V] (the gradient, in place, in the backward)
  std::vector<float> lse;     // [T]
  std::vector<float> scratch;
  // Work arrays reused from call to call: a fresh large std::vector is a
  // fresh mmap, page-faulted and zeroed on every micro-batch.
  std::vector<float> h, dh, dhn, losses;
  std::vector<float> logits_e, out, dxn, shared_scratch, doutp, dw, dxp, expert_scratch,
      dweights, dlogits_e;
};

// Grows `v` to at least n elements (never shrinks: the buffers are reused).
template <class T>
T* at_least(std::vector<T>& v, std::int64_t n) {
  if (static_cast<std::int64_t>(v.size()) < n) v.resize(static_cast<std::size_t>(n));
  return v.data();
}

// linear_backward_weight now, or held back in `deferred` when it is set.
// dy_changes: dy is a work array the backward overwrites later, so a held
// job reads a copy of it.
void weight_grad(DeferredWeightGrads* deferred, float* dw, const float* dy, bool dy_changes,
                 const float* x, std::int64_t n, std::int64_t in, std::int64_t out);
// mlp_backward with its weight half held back the same way (dy copied).
void mlp_grads(DeferredWeightGrads* deferred, float* dx, const kernels::MlpGrads& dw,
               const float* dy, const float* x, const float* saved, std::int64_t n,
               const kernels::MlpWeights& w, float* scratch, bool accumulate);

// RMSNorm of h into s (x kept for the backward).
void norm_forward(NormSaved& s, const std::vector<float>& h, const float* w, std::int64_t T,
                  std::int64_t H, float eps);
// dh += the gradient through the norm of dxn; dw += its weight gradient.
void norm_backward(std::vector<float>& dh, float* dw, const float* dxn, const NormSaved& s,
                   const float* w, std::int64_t T, std::int64_t H);

}  // namespace epx::model
