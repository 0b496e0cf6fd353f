// Attention of one segment (consecutive positions of one sequence) over the
// KV cache, two ways:
//
// - attention_scalar: each row at position p, head by head, with scalar
//   loops over the cached positions 0..p in a fixed order: a row's bits
//   depend on its query and the cached keys and values only, not on the
//   segment it came in (what --deterministic needs: a prompt gives the same
//   bits whatever its chunking, docs/serve.md).
// - attention_gemm: the segment at once, per head: S = q K^T over the
//   cached context (cblas_sgemm), the causal mask and a max-subtracted f32
//   softmax per row, then O = P V (cblas_sgemm). A row's bits may depend on
//   the segment's shape (the GEMMs' blocking), not on other sequences: the
//   same segment gives the same bits on any rank, so the EP invariance
//   holds, the chunking invariance does not.
//
// Both compute the kernel's formulas (include/epx/model_kernels.hpp):
// s_j = (q . k_j) * (1 / sqrtf(head_dim)), p_j = expf(s_j - max) / sum,
// out = sum_j p_j v_j, and agree to f32 rounding.
#pragma once

#include <cstdint>
#include <vector>

#include "serve/kv_cache.hpp"

namespace epx::serve {

struct SegmentAttention {
  std::int64_t seq = 0;  // KvCache sequence id
  int layer = 0;
  std::int64_t start = 0;  // position of row 0
  std::int64_t rows = 0;   // row i is position start + i and sees positions 0..start + i
  std::int64_t heads = 0;  // heads * head_dim = the cache's hidden size
  std::int64_t head_dim = 0;
  const float* q = nullptr;  // [rows, heads * head_dim], RoPE applied
  float* out = nullptr;      // [rows, heads * head_dim], written
};

// Work arrays reused from call to call (never shrunk).
struct AttentionScratch {
  std::vector<float> scores, keys, values;
};

// The keys and values of positions 0..start + rows - 1 must be in the cache.
void attention_scalar(KvCache& cache, const SegmentAttention& a, AttentionScratch& s);
void attention_gemm(KvCache& cache, const SegmentAttention& a, AttentionScratch& s);

}  // namespace epx::serve
