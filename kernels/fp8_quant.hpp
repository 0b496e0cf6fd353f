// Per-block FP8 quantization math (DESIGN.md "FP8 payloads"), shared by the CPU
// loops in kernels/quant.cpp and the CUDA kernel in kernels/cuda/quant.cu.
//
// For each token and each block of kFp8BlockSize channels, in f32:
//   a     = max(amax, 1e-4f)
//   scale = a / 448                     q = e4m3(x * (448 / a))
//   ue8m0: scale = 2^ceil(log2(a / 448)), q = e4m3(x / scale)
//   dequantized value = e4m3_to_float(q) * scale
//
// amax ignores NaN: it is the largest |x| over the block's non-NaN elements
// (amax_bits_step below; a fabsf/fmaxf loop has the same result, as has any
// reduction order, since max over non-NaN values is associative). A NaN element
// is still encoded as an E4M3 NaN (0x7F | its sign bit) and leaves the other
// elements' scale untouched. An infinite element makes a = inf: the scale is
// inf, the multiplier 0, finite elements quantize to signed zeros and infinite
// ones to NaN (0x7F | sign).
//
// Every operation here is one IEEE f32 operation (no a * b + c that a compiler
// could fuse into an FMA), so CPU and GPU round identically.
#pragma once

#include <cstdint>

#include "kernels/float_convert.hpp"

namespace epx::kernels {

constexpr int kFp8BlockSize = 128;
constexpr float kFp8AmaxFloor = 1e-4f;

// One step of the block amax, on f32 bit patterns: acc = max(acc, |x|), with a
// NaN x counted as 0. For non-negative floats the order of the bit patterns as
// integers is the order of the values, so this is the float maximum. Integer
// max reductions vectorise on CPUs without fast-math (float ones do not; signed
// ones also with plain SSE2) and warp-reduce exactly on GPUs. Start from 0;
// fp8_amax_value(acc) is the amax.
EPX_HD inline std::int32_t amax_bits_step(std::int32_t acc, float x) {
  const auto a = static_cast<std::int32_t>(float_bits(x) & 0x7FFFFFFFu);
  const std::int32_t v = a > 0x7F800000 ? 0 : a;
  return v > acc ? v : acc;
}

EPX_HD inline float fp8_amax_value(std::int32_t amax_bits) {
  return bits_float(static_cast<std::uint32_t>(amax_bits));
}

namespace detail {

// a = fmaxf(amax, 1e-4f), written as a select (same result for every input,
// NaN included: a NaN amax gives the floor).
EPX_HD inline float floored_amax(float amax) { return amax > kFp8AmaxFloor ? amax : kFp8AmaxFloor; }

// 2^ceil(log2(s)) for a positive normal f32 s, from its bits: s itself when its
// mantissa is zero, else the next power of two (exponent + 1, mantissa cleared).
// inf stays inf. Here s = a / 448 >= 1e-4 / 448 > 2^-23 and s <= FLT_MAX / 448 <
// 2^120, so s is normal and the result is a finite normal power of two (or inf).
EPX_HD inline float pow2_ceil(float s) {
  const std::uint32_t u = float_bits(s);
  if ((u & 0x007FFFFFu) == 0 || u >= kF32Inf) return s;
  return bits_float(((u >> 23) + 1u) << 23);
}

}  // namespace detail

// The block's dequantization scale.
EPX_HD inline float fp8_block_scale(float amax, bool ue8m0) {
  const float s = detail::floored_amax(amax) / kE4m3Max;
  return ue8m0 ? detail::pow2_ceil(s) : s;
}

// The factor m with q = e4m3(x * m).
//  - non-ue8m0: m = 448 / a, the recipe itself.
//  - ue8m0: m = 1 / scale, computed exactly from the bits (scale = 2^k with
//    -23 <= k <= 120, so 2^-k is a normal f32). Then x * m == x / scale bit for
//    bit: both are the correctly rounded value of the same real number x * 2^-k
//    (IEEE multiply and divide are both correctly rounded). With scale = inf,
//    m = 0 and x * 0 matches x / inf (0 for finite x, NaN for inf or NaN x).
EPX_HD inline float fp8_quant_multiplier(float amax, bool ue8m0) {
  const float a = detail::floored_amax(amax);
  if (!ue8m0) return kE4m3Max / a;
  const std::uint32_t scale_bits = float_bits(detail::pow2_ceil(a / kE4m3Max));
  if (scale_bits >= detail::kF32Inf) return 0.0f;
  return bits_float((254u - (scale_bits >> 23)) << 23);
}

// q = e4m3(x * multiplier), with the sign taken from x. The product has x's sign
// except when it is NaN (x NaN, or x = inf with multiplier 0), and the sign of a
// NaN that arithmetic produces differs between CPUs (x86: negative default NaN)
// and GPUs (canonical 0x7FFFFFFF); taking x's sign makes both give 0x7F | sign(x).
//
// fp8_quantize_code is the same as a 32-bit value (0x00-0xFF), for CPU loops:
// keeping lanes 32 bits wide up to the store lets them vectorise without
// narrowing every intermediate to bytes.
EPX_HD inline std::uint32_t fp8_quantize_code(float x, float multiplier) {
  const std::uint32_t sign = (float_bits(x) >> 24) & 0x80u;
  const std::uint32_t y = float_bits(x * multiplier);
  return detail::e4m3_magnitude(static_cast<std::int32_t>(y & detail::kF32AbsMask)) | sign;
}

EPX_HD inline std::uint8_t fp8_quantize(float x, float multiplier) {
  return static_cast<std::uint8_t>(fp8_quantize_code(x, multiplier));
}

EPX_HD inline float fp8_dequantize(std::uint8_t q, float scale) { return e4m3_to_float(q) * scale; }

}  // namespace epx::kernels
