// Inputs and single-process references for the comm tests. Every rank can
// build every rank's inputs (seeded by rank), so each rank computes what it
// must receive without any communication, with plain loops.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include <epx/epx.hpp>

namespace epx::test {

struct Shape {
  std::vector<std::int64_t> tokens;  // per rank
  std::int64_t hidden = 256;
  int topk = 4;
  int experts = 16;
  DType dtype = DType::bf16;
  double empty_slot = 0.1;  // probability that a top-k slot is -1
  int all_empty_every = 7;  // every n-th token has no expert at all (0: none)
  std::uint32_t seed = 1;
  int ranks() const { return static_cast<int>(tokens.size()); }
};

struct RankInputs {
  Tensor x;             // [T,H] dtype
  Tensor topk_idx;      // [T,K] i64
  Tensor topk_weights;  // [T,K] f32
};

inline float to_float(const Tensor& t, std::int64_t i) {
  float f = 0;
  if (t.dtype() == DType::f32) return t.data<float>()[i];
  Tensor one = Tensor::wrap(const_cast<std::uint16_t*>(t.data<std::uint16_t>() + i), {1}, t.dtype());
  Tensor out = kernels::cast(one, DType::f32);
  std::memcpy(&f, out.raw(), 4);
  return f;
}

// Rounds f32 values to `dtype` (f32 or bf16) through the tested cast kernel.
inline Tensor round_to(const Tensor& f32, DType dtype) {
  return dtype == DType::f32 ? f32.clone() : kernels::cast(f32, dtype);
}

// `payload_salt` changes x only: the routing stays (for the cached dispatch).
inline RankInputs make_inputs(const Shape& s, int rank, std::uint32_t payload_salt = 0) {
  const std::int64_t T = s.tokens[rank], H = s.hidden;
  const int K = s.topk;
  const std::uint32_t seed = s.seed * 7919u + static_cast<std::uint32_t>(rank) * 104729u;
  std::mt19937 rng(seed + payload_salt * 15485863u);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> uni(0.0f, 1.0f);
  Tensor xf = Tensor::empty({T, H}, DType::f32);
  float* xp = xf.data<float>();
  for (std::int64_t t = 0; t < T; ++t) {
    const float scale = std::exp2(uni(rng) * 12.0f - 6.0f);  // rows of very different magnitude
    for (std::int64_t h = 0; h < H; ++h) xp[t * H + h] = normal(rng) * scale + 1e-3f;
  }
  RankInputs in;
  in.x = round_to(xf, s.dtype);
  rng.seed(seed ^ 0x5bd1e995u);
  in.topk_idx = Tensor::empty({T, K}, DType::i64);
  in.topk_weights = Tensor::empty({T, K}, DType::f32);
  std::vector<std::int64_t> perm(static_cast<std::size_t>(s.experts));
  for (std::int64_t t = 0; t < T; ++t) {
    std::iota(perm.begin(), perm.end(), 0);
    const int distinct = std::min(K, s.experts);  // slots past E stay -1
    for (int k = 0; k < distinct; ++k) {  // partial Fisher-Yates: distinct experts
      std::uniform_int_distribution<int> pick(k, s.experts - 1);
      std::swap(perm[k], perm[pick(rng)]);
    }
    const bool none = s.all_empty_every > 0 && t % s.all_empty_every == s.all_empty_every - 1;
    for (int k = 0; k < K; ++k) {
      const bool empty = none || k >= distinct || uni(rng) < s.empty_slot;
      in.topk_idx.data<std::int64_t>()[t * K + k] = empty ? -1 : perm[k];
      in.topk_weights.data<float>()[t * K + k] = uni(rng) + 0.01f;
    }
  }
  return in;
}

// What rank `me` must receive from a dispatch, in order (source rank, token).
struct ExpectedDispatch {
  std::int64_t rows = 0;
  std::vector<int> src_rank;
  std::vector<std::int64_t> src_token;
  std::vector<std::uint8_t> x;  // rows * row bytes, payload dtype
  std::vector<float> scales;    // rows * H/128 when FP8
  std::vector<std::int64_t> topk_idx;
  std::vector<float> topk_weights;
  std::vector<int> per_expert;
};

// fp8: payload cast with per_token_cast_to_fp8(ue8m0).
inline ExpectedDispatch expected_dispatch(const Shape& s, int me, bool fp8, bool ue8m0,
                                          int alignment, std::uint32_t salt = 0) {
  const int R = s.ranks(), K = s.topk, per_rank = s.experts / R;
  const std::int64_t H = s.hidden;
  ExpectedDispatch e;
  e.per_expert.assign(per_rank, 0);
  for (int src = 0; src < R; ++src) {
    RankInputs in = make_inputs(s, src, salt);
    Tensor payload = in.x, scales;
    if (fp8) std::tie(payload, scales) = kernels::per_token_cast_to_fp8(in.x, ue8m0);
    const std::size_t row_bytes = static_cast<std::size_t>(H) * dtype_size(payload.dtype());
    for (std::int64_t t = 0; t < s.tokens[src]; ++t) {
      const std::int64_t* ids = in.topk_idx.data<std::int64_t>() + t * K;
      bool mine = false;
      for (int k = 0; k < K; ++k) mine |= ids[k] >= 0 && ids[k] / per_rank == me;
      if (!mine) continue;
      ++e.rows;
      e.src_rank.push_back(src);
      e.src_token.push_back(t);
      const auto* row = static_cast<const std::uint8_t*>(payload.raw()) + t * row_bytes;
      e.x.insert(e.x.end(), row, row + row_bytes);
      if (fp8) {
        const float* sc = scales.data<float>() + t * (H / 128);
        e.scales.insert(e.scales.end(), sc, sc + H / 128);
      }
      for (int k = 0; k < K; ++k) {
        const bool local = ids[k] >= 0 && ids[k] / per_rank == me;
        e.topk_idx.push_back(local ? ids[k] - me * per_rank : -1);
        e.topk_weights.push_back(local ? in.topk_weights.data<float>()[t * K + k] : 0.0f);
        if (local) ++e.per_expert[ids[k] - me * per_rank];
      }
    }
  }
  for (int& c : e.per_expert) c = (c + alignment - 1) / alignment * alignment;
  return e;
}

// The expert output a test computes on rank `r` for a received row: a
// deterministic function of the row, so the source can predict it.
inline float expert_output(float x, int r, std::int64_t h) {
  return x * static_cast<float>(r + 1) + 0.25f * static_cast<float>(h % 3);
}

}  // namespace epx::test
