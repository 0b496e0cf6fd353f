// The low-latency tests' references: the test-support library's
// (tests/support/low_latency_reference.hpp), fed with make_inputs, and the
// tests' own expert outputs (expert_value of the dequantized row), which a
// source can predict for its own tokens without communication.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "comm_fixture.hpp"
#include "tests/support/low_latency_reference.hpp"

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

// The expert output the tests compute for a received row of global expert g:
// f32 value before rounding to y's dtype.
inline float expert_value(float x, int g, std::int64_t h) {
  volatile float a = x * (1.0f + 0.5f * static_cast<float>(g));
  volatile float b = a + 0.25f * static_cast<float>(h % 3);
  return b;
}

using Expected = LowLatencyExpected;

inline Expected expected_dispatch(const Shape& s, int me, bool fp8, bool ue8m0,
                                  std::uint32_t salt) {
  return expected_low_latency_dispatch(Topology::flat(s.ranks(), s.experts), me, inputs_of(s, salt),
                                       PayloadFormat{fp8, ue8m0});
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

// What low_latency_combine must return on rank `me` ([T,H] in ydtype), y_k
// being the rounded expert output of the token's row as its expert received
// it (dequantized when fp8).
inline Tensor expected_combine(const Shape& s, int me, bool fp8, bool ue8m0, DType ydtype,
                               std::uint32_t salt) {
  const std::int64_t T = s.tokens[me], H = s.hidden;
  const Payload sent = payload_of(make_inputs(s, me, salt).x, PayloadFormat{fp8, ue8m0});
  const std::vector<float> rows = T > 0
                                      ? dequantize(sent.x.raw(), sent.x.dtype(),
                                                   fp8 ? sent.scales.data<float>() : nullptr, T, H)
                                      : std::vector<float>();
  const ExpertSlotRows y = [&](std::int64_t g, std::int64_t, std::int64_t t, float* out) {
    for (std::int64_t h = 0; h < H; ++h)
      out[h] = expert_value(rows[static_cast<std::size_t>(t * H + h)], static_cast<int>(g), h);
    round_in_place(out, H, ydtype);
  };
  return expected_low_latency_combine(Topology::flat(s.ranks(), s.experts), me, inputs_of(s, salt),
                                      y, ydtype);
}

// Checks a dispatch result (after its hook) against the reference; `what`
// names the call in failure messages. Only rows 0..count-1 are compared.
inline void check_dispatch(const comm::LowLatencyDispatchResult& got, const Expected& want,
                           const Shape& s, int max_tokens, const std::string& what) {
  EXPECT_TRUE(got.handle.defined()) << what << " (rank " << world().rank() << ")";
  const std::string diff = compare_low_latency_dispatch(
      what, got, want, static_cast<std::int64_t>(s.ranks()) * max_tokens);
  EXPECT_TRUE(diff.empty()) << diff << " (rank " << world().rank() << ")";
}

// Bitwise comparison of a combine result with expected_combine().
inline void check_combine(const Tensor& got, const Tensor& want, const std::string& what) {
  expect_same(what, got, want);
}

}  // namespace epx::test::ll
