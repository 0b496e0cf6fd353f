// The model's inference forward on one rank's share of a step: a set of
// segments (a chunk of a prompt, or one decode token), each continuing a
// sequence whose keys and values up to its start are in the KV cache. The
// math is docs/train.md's forward; the MoE layers reach their experts on
// every rank of the Buffer's group (normal-mode dispatch and combine), so
// every rank calls run() once per step, with or without segments of its own.
//
// Each position attends to the cached positions 0..pos in order, with the
// same loop for a prefill chunk and a decode token, so a prompt gives the
// same keys whatever the chunking. Combine carries each (token, k) output in
// its own column block, so every sum it makes has one non-zero term (exact)
// and the owner adds the k terms in k order: the MoE output does not depend
// on which rank holds which expert. With `deterministic` every GEMM runs one
// row at a time, so a row's bits do not depend on the other rows of the
// step either (batch-invariant); without it the GEMMs take the whole step,
// and OpenBLAS may round a row differently for another batch (docs/serve.md).
#pragma once

#include <cstdint>
#include <vector>

#include <epx/comm.hpp>

#include "model/model.hpp"
#include "serve/kv_cache.hpp"

namespace epx::serve {

namespace detail {
// Grows `v` to at least n elements (never shrinks: the work arrays are
// reused from step to step, not reallocated and zeroed each time).
template <class T>
T* at_least(std::vector<T>& v, std::int64_t n) {
  if (static_cast<std::int64_t>(v.size()) < n) v.resize(static_cast<std::size_t>(n));
  return v.data();
}
}  // namespace detail

struct Segment {
  std::int64_t seq = 0;    // KvCache sequence id
  std::int64_t start = 0;  // position of tokens[0]
  const std::int32_t* tokens = nullptr;
  std::int64_t count = 0;
  bool want_logits = false;  // the logits of its last position
};

class Forward {
 public:
  Forward(model::Model& model, comm::Buffer& buffer, KvCache& cache, bool deterministic);

  // Collective over the buffer's group. Writes the keys and values of every
  // segment's positions into the cache and, for each segment with
  // want_logits (in order), V logits into `logits`. With low_latency (every
  // rank must pass the same) the MoE layers use the Buffer's low-latency
  // dispatch and combine (f32 payload, no FP8): at most the Buffer's
  // max_tokens_per_rank rows per rank. Its combine sums w_k * out_k in k
  // order in f32, the same sum as the normal path's, so both modes give
  // the same bits.
  void run(const std::vector<Segment>& segments, std::vector<float>& logits,
           bool low_latency = false);

  // Per MoE layer and logical expert, the (token, expert) choices of this
  // rank's tokens since the last take (the /metrics expert load).
  std::vector<std::int64_t> take_expert_counts();

 private:
  void linear(float* y, const float* x, const float* w, std::int64_t n, std::int64_t in,
              std::int64_t out, bool accumulate) const;
  void attention(int layer);
  void dense_ffn(int layer);
  void moe(int layer);
  // The routed experts of xn_ [T_, H] with topk_idx_/topk_w_, summed into out [T_, H].
  void routed_normal(int layer, float* out);
  void routed_low_latency(int layer, float* out);
  void expert_rows(int layer, int e, float* y, const float* x, std::int64_t rows);

  model::Model& model_;
  comm::Buffer& buffer_;
  KvCache& cache_;
  bool deterministic_;
  bool low_latency_ = false;  // this step's MoE path
  std::int64_t T_ = 0;        // rows of this step on this rank
  std::vector<std::int64_t> row_seq_, row_pos_;
  std::vector<std::int32_t> positions_;
  std::vector<float> h_, xn_, rstd_, q_, k_, v_, a_, scores_, mlp_, scratch_;
  std::vector<float> logits_e_, route_scores_, topk_w_, xp_, outp_, out_;
  std::vector<std::int64_t> topk_idx_;
  std::vector<std::int64_t> counts_;  // [MoE layers * E]
};

}  // namespace epx::serve
