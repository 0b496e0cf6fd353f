// Single-process references for the low-latency dispatch/combine tests.
// Every rank regenerates every rank's inputs (make_inputs, seeded by rank and
// salt), so each rank knows, without communication, which rows every one of
// its local experts must receive (by source rank, then source token), their
// bytes and scales, and what combine must return for its own tokens.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <tuple>
#include <vector>

#include "comm_fixture.hpp"

namespace epx::test::ll {

// The low-latency options of a Buffer for these shapes.
inline comm::BufferOptions buffer_options(int max_tokens, std::int64_t hidden, int experts,
                                          double timeout_s = 60) {
  comm::BufferOptions o;
  o.num_bytes = std::size_t{1} << 16;
  o.timeout_s = timeout_s;
  o.low_latency = true;
  o.max_tokens_per_rank = max_tokens;
  o.hidden = static_cast<int>(hidden);
  o.num_experts = experts;
  return o;
}

// Rows of f32 values from a payload: float(x) for f32/bf16, float(q) * scale
// of the row's 128-channel block for e4m3. The same code dequantizes what a
// source sends and what a receiver got, so both sides derive the same y.
inline std::vector<float> dequantize(const void* payload, DType dtype, const float* scales,
                                     std::int64_t rows, std::int64_t H) {
  std::vector<float> out(static_cast<std::size_t>(rows * H));
  if (rows == 0) return out;
  if (dtype == DType::f32) {
    std::memcpy(out.data(), payload, out.size() * sizeof(float));
    return out;
  }
  Tensor in = Tensor::wrap(const_cast<void*>(payload), {rows, H}, dtype);
  Tensor f = kernels::cast(in, DType::f32);
  std::memcpy(out.data(), f.raw(), out.size() * sizeof(float));
  if (dtype == DType::e4m3) {
    for (std::int64_t i = 0; i < rows * H; ++i) {
      const std::int64_t r = i / H, h = i % H;
      volatile float v = out[i] * scales[r * (H / 128) + h / 128];
      out[i] = v;
    }
  }
  return out;
}

// Rounds f32 values in place to `dtype` (f32: unchanged; bf16: nearest even
// through the tested cast kernel), and back to f32.
inline void round_in_place(std::vector<float>& v, DType dtype) {
  if (dtype == DType::f32 || v.empty()) return;
  Tensor f = Tensor::wrap(v.data(), {static_cast<std::int64_t>(v.size())}, DType::f32);
  Tensor back = kernels::cast(kernels::cast(f, dtype), DType::f32);
  std::memcpy(v.data(), back.raw(), v.size() * sizeof(float));
}

// The expert output the tests compute for a received row of global expert g:
// f32 value before rounding to y's dtype.
inline float expert_value(float x, int g, std::int64_t h) {
  volatile float a = x * (1.0f + 0.5f * static_cast<float>(g));
  volatile float b = a + 0.25f * static_cast<float>(h % 3);
  return b;
}

// Expected dispatch result on one rank, per local expert.
struct Expected {
  std::vector<int> count;                       // [E_local]
  std::vector<std::vector<std::uint8_t>> x;     // per expert: count * row bytes
  std::vector<std::vector<float>> scales;       // per expert: count * H/128 (fp8)
  std::vector<std::vector<int>> src_rank;       // per expert, per row
  std::vector<std::vector<std::int64_t>> src_token;
};

inline Expected expected_dispatch(const Shape& s, int me, bool fp8, bool ue8m0,
                                  std::uint32_t salt) {
  const int R = s.ranks(), K = s.topk, E_local = s.experts / R;
  const std::int64_t H = s.hidden;
  Expected e;
  e.count.assign(E_local, 0);
  e.x.resize(E_local);
  e.scales.resize(E_local);
  e.src_rank.resize(E_local);
  e.src_token.resize(E_local);
  for (int src = 0; src < R; ++src) {
    RankInputs in = make_inputs(s, src, salt);
    Tensor payload = in.x, scales;
    if (fp8 && s.tokens[src] > 0) std::tie(payload, scales) = kernels::per_token_cast_to_fp8(in.x, ue8m0);
    const std::size_t row_bytes =
        static_cast<std::size_t>(H) * dtype_size(fp8 ? DType::e4m3 : s.dtype);
    for (std::int64_t t = 0; t < s.tokens[src]; ++t) {
      const std::int64_t* ids = in.topk_idx.data<std::int64_t>() + t * K;
      for (int k = 0; k < K; ++k) {
        if (ids[k] < 0 || ids[k] / E_local != me) continue;
        const int le = static_cast<int>(ids[k] - static_cast<std::int64_t>(me) * E_local);
        ++e.count[le];
        e.src_rank[le].push_back(src);
        e.src_token[le].push_back(t);
        const auto* row = static_cast<const std::uint8_t*>(payload.raw()) + t * row_bytes;
        e.x[le].insert(e.x[le].end(), row, row + row_bytes);
        if (fp8) {
          const float* sc = scales.data<float>() + t * (H / 128);
          e.scales[le].insert(e.scales[le].end(), sc, sc + H / 128);
        }
      }
    }
  }
  return e;
}

// y on this rank from a dispatch result (after its hook): rows 0..count-1 of
// local expert e hold expert_value(dequantized row, global id), rounded to
// `ydtype`; rows past count hold NaN, which combine must never read.
inline Tensor make_y(const comm::LowLatencyDispatchResult& d, int me, DType ydtype) {
  const std::int64_t E_local = d.x.dim(0), slots = d.x.dim(1), H = d.x.dim(2);
  std::vector<float> y(static_cast<std::size_t>(E_local * slots * H),
                       std::numeric_limits<float>::quiet_NaN());
  const std::size_t row_bytes = static_cast<std::size_t>(H) * dtype_size(d.x.dtype());
  for (std::int64_t e = 0; e < E_local; ++e) {
    const std::int64_t n = std::min<std::int64_t>(d.count.data<std::int32_t>()[e], slots);
    if (n <= 0) continue;
    const auto* base = static_cast<const std::uint8_t*>(d.x.raw()) + e * slots * row_bytes;
    const float* sc = d.x_scales.defined() ? d.x_scales.data<float>() + e * slots * (H / 128) : nullptr;
    std::vector<float> rows = dequantize(base, d.x.dtype(), sc, n, H);
    const int g = static_cast<int>(me * E_local + e);
    for (std::int64_t i = 0; i < n * H; ++i) rows[i] = expert_value(rows[i], g, i % H);
    std::memcpy(y.data() + e * slots * H, rows.data(), rows.size() * sizeof(float));
  }
  Tensor f = Tensor::wrap(y.data(), {E_local, slots, H}, DType::f32);
  return ydtype == DType::f32 ? f.clone() : kernels::cast(f, ydtype);
}

// What low_latency_combine must return on rank `me` ([T,H] in ydtype): for
// each token, acc = 0; acc = acc + w_k * y_k over valid k ascending (f32
// multiply, then f32 add); rounded once. y_k is the rounded expert output of
// the token's row as its expert received it (dequantized when fp8).
inline Tensor expected_combine(const Shape& s, int me, bool fp8, bool ue8m0, DType ydtype,
                               std::uint32_t salt) {
  const int K = s.topk;
  const std::int64_t T = s.tokens[me], H = s.hidden;
  RankInputs in = make_inputs(s, me, salt);
  std::vector<float> rows;
  if (T > 0) {
    if (fp8) {
      auto [q, sc] = kernels::per_token_cast_to_fp8(in.x, ue8m0);
      rows = dequantize(q.raw(), DType::e4m3, sc.data<float>(), T, H);
    } else {
      rows = dequantize(in.x.raw(), s.dtype, nullptr, T, H);
    }
  }
  std::vector<float> out(static_cast<std::size_t>(T * H), 0.0f);
  std::vector<float> yk(static_cast<std::size_t>(H));
  for (std::int64_t t = 0; t < T; ++t) {
    for (int k = 0; k < K; ++k) {
      const std::int64_t g = in.topk_idx.data<std::int64_t>()[t * K + k];
      if (g < 0) continue;
      const float w = in.topk_weights.data<float>()[t * K + k];
      for (std::int64_t h = 0; h < H; ++h) yk[h] = expert_value(rows[t * H + h], static_cast<int>(g), h);
      round_in_place(yk, ydtype);
      for (std::int64_t h = 0; h < H; ++h) {
        volatile float p = w * yk[h];
        out[t * H + h] = out[t * H + h] + p;
      }
    }
  }
  Tensor f = Tensor::wrap(out.data(), {T, H}, DType::f32);
  return ydtype == DType::f32 ? f.clone() : kernels::cast(f, ydtype);
}

// Checks a dispatch result (after its hook) against the reference; `what`
// names the call in failure messages. Only rows 0..count-1 are compared.
inline void check_dispatch(const comm::LowLatencyDispatchResult& got, const Expected& want,
                           const Shape& s, int max_tokens, bool fp8, const std::string& what) {
  const int R = s.ranks(), E_local = s.experts / R, me = world().rank();
  const std::int64_t H = s.hidden, slots = static_cast<std::int64_t>(R) * max_tokens;
  const std::string where = what + " (rank " + std::to_string(me) + ")";
  ASSERT_TRUE(got.x.defined()) << where;
  ASSERT_EQ(got.x.shape(), (std::vector<std::int64_t>{E_local, slots, H})) << where;
  ASSERT_EQ(got.x.dtype(), fp8 ? DType::e4m3 : s.dtype) << where;
  ASSERT_TRUE(got.count.defined()) << where;
  ASSERT_EQ(got.count.dtype(), DType::i32) << where;
  ASSERT_EQ(got.count.shape(), (std::vector<std::int64_t>{E_local})) << where;
  EXPECT_TRUE(got.handle.defined()) << where;
  if (fp8) {
    ASSERT_TRUE(got.x_scales.defined()) << where;
    ASSERT_EQ(got.x_scales.dtype(), DType::f32) << where;
    ASSERT_EQ(got.x_scales.shape(), (std::vector<std::int64_t>{E_local, slots, H / 128})) << where;
  } else {
    EXPECT_FALSE(got.x_scales.defined()) << where;
  }
  const std::size_t row_bytes = static_cast<std::size_t>(H) * dtype_size(got.x.dtype());
  for (int e = 0; e < E_local; ++e) {
    const int n = got.count.data<std::int32_t>()[e];
    EXPECT_EQ(n, want.count[e]) << where << ": count of local expert " << e << " (global "
                                << me * E_local + e << ")";
    if (n != want.count[e]) continue;
    const auto* x = static_cast<const std::uint8_t*>(got.x.raw()) + e * slots * row_bytes;
    for (int i = 0; i < n; ++i) {
      if (std::memcmp(x + i * row_bytes, want.x[e].data() + i * row_bytes, row_bytes) != 0) {
        ADD_FAILURE() << where << ": x of local expert " << e << ", row " << i
                      << " differs; expected the row of source rank " << want.src_rank[e][i]
                      << ", token " << want.src_token[e][i];
        break;
      }
      if (fp8) {
        const float* sc = got.x_scales.data<float>() + (e * slots + i) * (H / 128);
        if (std::memcmp(sc, want.scales[e].data() + i * (H / 128), (H / 128) * sizeof(float)) != 0) {
          ADD_FAILURE() << where << ": x_scales of local expert " << e << ", row " << i
                        << " differ; expected those of source rank " << want.src_rank[e][i]
                        << ", token " << want.src_token[e][i];
          break;
        }
      }
    }
  }
}

// Bitwise comparison of a combine result with expected_combine().
inline void check_combine(const Tensor& got, const Tensor& want, const std::string& what) {
  const std::string where = what + " (rank " + std::to_string(world().rank()) + ")";
  ASSERT_TRUE(got.defined()) << where;
  ASSERT_EQ(got.shape(), want.shape()) << where;
  ASSERT_EQ(got.dtype(), want.dtype()) << where;
  const std::int64_t T = want.dim(0), H = want.dim(1);
  const std::size_t es = dtype_size(want.dtype());
  for (std::int64_t i = 0; i < T * H; ++i) {
    if (std::memcmp(static_cast<const std::uint8_t*>(got.raw()) + i * es,
                    static_cast<const std::uint8_t*>(want.raw()) + i * es, es) != 0) {
      float g = to_float(got, i), w = to_float(want, i);
      ADD_FAILURE() << where << ": combined x differs at token " << i / H << ", channel " << i % H
                    << ": got " << g << ", expected " << w;
      return;
    }
  }
}

}  // namespace epx::test::ll
