// The model's inference forward on one rank's share of a step: a set of
// segments (a chunk of a prompt, or one decode token), each continuing a
// sequence whose keys and values up to its start are in the KV cache. The
// math is docs/train.md's forward; the MoE layers reach their experts on
// every rank of the Buffer's group (normal-mode dispatch and combine), so
// every rank calls run() once per step, with or without segments of its own.
//
// Each position attends to the cached positions 0..pos. A decode token, and
// with `deterministic` every row, takes serve/attention.hpp's scalar loop in
// a fixed order, so that a prompt gives the same keys whatever the chunking;
// without it a prefill chunk of 2 or more rows takes the GEMM-shaped path
// (per head S = q K^T, softmax, P V), whose bits may depend on the chunk's
// shape but not on the other sequences or the rank. Combine carries each (token, k) output in
// its own column block, so every sum it makes has one non-zero term (exact)
// and the owner adds the k terms in k order: the MoE output does not depend
// on which rank holds which expert. With `deterministic` every GEMM runs one
// row at a time, so a row's bits do not depend on the other rows of the
// step either (batch-invariant); without it the GEMMs take the whole step,
// and OpenBLAS may round a row differently for another batch (docs/serve.md).
#pragma once

#include <cstdint>
#include <vector>

#include <epx/balancer.hpp>
#include <epx/comm.hpp>
#include <epx/model_kernels.hpp>

#include "model/model.hpp"
#include "serve/attention.hpp"
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
  // With fp8_dispatch (every rank must pass the same; hidden a multiple of
  // 128) both dispatch paths send xn as e4m3 with per-token 1x128 f32
  // scales, and the experts take the dequantised rows
  // (kernels::per_token_cast_back, as the training forward with
  // parallel.fp8_dispatch does); the combine, the shared experts and every
  // other op stay f32.
  Forward(model::Model& model, comm::Buffer& buffer, KvCache& cache, bool deterministic,
          bool fp8_dispatch = false);

  // Collective over the buffer's group. Writes the keys and values of every
  // segment's positions into the cache and, for each segment with
  // want_logits (in order), V logits into `logits`. With low_latency (every
  // rank must pass the same) the MoE layers use the Buffer's low-latency
  // dispatch and combine (the payload f32, or fp8 as above): at most the
  // Buffer's max_tokens_per_rank rows per rank. Its combine sums w_k * out_k
  // in k order in f32, the same sum as the normal path's, and both paths
  // quantise a row with the same function, so both modes give the same bits.
  // With low_latency and overlap (every rank must pass the same), the rows
  // split into two micro-batches (this rank's first half of the segments,
  // then the rest) whose layers interleave: one's dispatch or combine is in
  // flight while the other's attention or experts run. Every row's
  // arithmetic is the same as without the split; with `deterministic` (one
  // row per GEMM) the bits are too.
  // step_rows: the step's rows over all ranks (the same on every rank), or
  // -1 if unknown. With deterministic, and in a step of one row, the linear
  // layers and experts go row by row as matrix-vector products
  // (kernels::linear_forward_row; OpenBLAS's sgemm packs the weights even
  // for one row): every row of such a step computed alike, whatever the rank
  // count, the mode or the split.
  void run(const std::vector<Segment>& segments, std::vector<float>& logits,
           bool low_latency = false, bool overlap = false, std::int64_t step_rows = -1);

  // Per MoE layer and logical expert, the (token, expert) choices of this
  // rank's tokens since the last take (the /metrics expert load).
  std::vector<std::int64_t> take_expert_counts();

  // Redundant experts: with a placement (the live balancer's, over the
  // Buffer's group; model.expert_slots() this rank's share of it) each
  // (token, logical expert) goes to one of its replicas
  // (balancer::route_to_replicas, num_nodes as planned) and the MoE layers
  // dispatch to physical slots. The outputs stay the same bits (the sums
  // above do not depend on the placement). nullptr: slot = expert. Every
  // rank must set the same; the placement must outlive its use.
  void set_placement(const balancer::Placement* placement, int num_nodes);

 private:
  // One micro-batch: its rows (positions of this step on this rank) and the
  // work arrays of its layers. A step is one micro-batch, or two with the
  // low-latency overlap.
  struct Rows {
    std::int64_t T = 0;
    std::vector<std::int64_t> seq, pos;
    std::vector<std::int64_t> seg_first, seg_count;  // per segment: its first row and its rows
    std::vector<std::int32_t> positions, tokens;
    std::vector<float> h, xn, rstd, q, k, v, a, mlp;
    std::vector<float> logits_e, route_scores, topk_w, out;
    std::vector<std::int64_t> topk_idx;
    std::vector<std::int64_t> slot_idx;  // topk_idx as the physical slots to dispatch to
  };
  // A low-latency dispatch or combine of one micro-batch, sent, not yet received.
  struct InFlight {
    comm::LowLatencyDispatchResult dispatch;
    comm::LowLatencyCombineResult combine;
    comm::LowLatencyHandle handle;
    Tensor y;  // the combine's input, held until it is received
  };

  void load(Rows& r, const std::vector<Segment>& segs, std::size_t first, std::size_t last);
  void linear(float* y, const float* x, const float* w, std::int64_t n, std::int64_t in,
              std::int64_t out, bool accumulate) const;
  // A SwiGLU MLP over n rows, batched or row by row as linear(); scratch
  // holds its saved g, u, h.
  void mlp(float* y, std::vector<float>& scratch, const float* x, std::int64_t n,
           const kernels::MlpWeights& w, bool accumulate) const;
  void attention(Rows& r, int layer);
  void dense_ffn(Rows& r, int layer);
  void moe(Rows& r, int layer);
  // RMSNorm, router and top-k of r's rows into r.xn, r.topk_idx, r.topk_w.
  void route(Rows& r, int layer);
  // r.out += the shared experts of r.xn; then r.h += r.out.
  void shared_and_add(Rows& r, int layer);
  // The routed experts of r.xn with r.topk_idx/topk_w into r.out [T, H].
  void routed_normal(Rows& r, int layer);
  // The low-latency path in three parts, so that two micro-batches can
  // interleave: send the dispatch; receive it, run the experts and send the
  // combine; receive the combine into r.out. With `hook` the sends return
  // before the peers' rows arrive (the Buffer's return_recv_hook).
  void ll_dispatch(Rows& r, InFlight& f, bool hook);
  void ll_experts_combine(Rows& r, int layer, InFlight& f, bool hook);
  void ll_receive(Rows& r, InFlight& f);
  // Decode layers of two micro-batches, each one's all-to-all in flight
  // while the other computes (docs/serve.md, "Two-batch overlap").
  void layers_overlapped();
  void expert_rows(int layer, int e, float* y, const float* x, std::int64_t rows);

  model::Model& model_;
  comm::Buffer& buffer_;
  KvCache& cache_;
  bool deterministic_;
  bool fp8_dispatch_;
  bool low_latency_ = false;  // this step's MoE path
  bool by_row_ = false;       // this step's linear layers row by row (run())
  Rows rows_[2];
  AttentionScratch attn_;
  std::vector<float> xp_, outp_, mlp_;
  std::vector<std::int64_t> counts_;  // [MoE layers * E]
  const balancer::Placement* placement_ = nullptr;
  int placement_nodes_ = 1;
};

}  // namespace epx::serve
