// Element conversions between f32 and bf16, f16, FP8 E4M3FN and FP8 E5M2.
//
// Shared by the CPU kernels and the CUDA kernels (EPX_HD = __host__ __device__),
// so that both produce the same bits: everything is integer arithmetic on the
// f32 bit pattern, with no hardware FP8/f16 intrinsics and no float math whose
// result could depend on flush-to-zero or fast-math settings. The one float
// operation, a single addition in the E4M3 encoder (e4m3_magnitude below), is
// exact under every such setting; like every f32 operation of the quantization
// recipe it assumes the default rounding mode (round to nearest, ties to even).
//
// Rounding is round-to-nearest-even everywhere. Narrowing to E4M3, E5M2 and f16
// saturates: every finite value and infinity whose magnitude is at or beyond the
// largest finite code becomes that code with the input's sign. For these three
// formats the largest finite value is itself the saturation threshold, because
// values between it and the next (unrepresentable) step either round down to it
// or round up past it and are clamped back to it; for E4M3, the midpoint 464
// between 448 (code 0x7E, even) and the would-be 480 (0x7F, the NaN code) is a
// tie that rounds to the even 448 anyway.
//
// bf16 keeps IEEE semantics instead (as torch and __float2bfloat16_rn do): it has
// the exponent range of f32, so only f32 infinities and values within half a
// bf16 ulp of FLT_MAX are affected, and they become infinities.
//
// NaN: E4M3 -> 0x7F | sign, E5M2 -> 0x7E | sign (quiet), f16 -> 0x7E00 | sign,
// bf16 -> the top half of the f32 bits with the quiet bit set (sign and leading
// payload kept). Decoding a NaN gives a quiet f32 NaN with the same sign and the
// payload bits shifted into place.
#pragma once

#include <cstdint>
#include <utility>

#ifndef EPX_HD
#ifdef __CUDACC__
#define EPX_HD __host__ __device__
#else
#define EPX_HD
#endif
#endif

namespace epx::kernels {

// ---- bit casts that work in host and device code ----

EPX_HD inline std::uint32_t float_bits(float f) {
#ifdef __CUDA_ARCH__
  return __float_as_uint(f);
#else
  return __builtin_bit_cast(std::uint32_t, f);
#endif
}

EPX_HD inline float bits_float(std::uint32_t u) {
#ifdef __CUDA_ARCH__
  return __uint_as_float(u);
#else
  return __builtin_bit_cast(float, u);
#endif
}

namespace detail {

constexpr std::uint32_t kF32AbsMask = 0x7FFFFFFFu;
constexpr std::uint32_t kF32Inf = 0x7F800000u;
constexpr std::uint32_t kF32QuietNan = 0x7FC00000u;
constexpr std::int32_t kF32InfBits = 0x7F800000;  // for comparisons with |f| as int32

// f32 bit pattern of n * 2^p, for 1 <= n < 2^24 and a normal result (compile time).
EPX_HD constexpr std::int32_t f32_bits_of(std::int32_t n, int p) {
  int msb = 0;
  while ((n >> (msb + 1)) != 0) ++msb;
  return ((p + msb + 127) << 23) | ((n << (23 - msb)) & 0x007FFFFF);
}

// The narrowing below works on |f| as f32 bits held in an int32 (sign cleared,
// so every value is non-negative and integer order is value order). The target
// has kMant mantissa bits and exponent bias kBias; the code returned has no sign.
// Everything is written without branches on the value, so CPU loops over it
// vectorise (with plain SSE2 for the FP8 formats: no per-lane variable shifts).

// Normal results: keep the top kMant mantissa bits, rebias the exponent, and
// round on the dropped bits: up when they exceed half, or equal half with the
// kept part odd (ties to even), i.e. when rem + (kept & 1) > half. A carry out
// of the mantissa runs into the exponent, which is the correct next binade.
// Only valid for |f| >= the smallest normal.
template <int kMant, int kBias>
EPX_HD inline std::int32_t round_normal(std::int32_t abs) {
  constexpr int kShift = 23 - kMant;
  constexpr std::int32_t kHalf = std::int32_t{1} << (kShift - 1);
  const std::int32_t kept = (abs >> kShift) - ((127 - kBias) << kMant);
  const std::int32_t rem = abs & ((std::int32_t{1} << kShift) - 1);
  return kept + static_cast<std::int32_t>(rem + (kept & 1) > kHalf);
}

// Subnormal results of a format with few subnormals (FP8), by counting rounding
// thresholds: code k is k * 2^(1 - kBias - kMant), and the midpoint between codes
// k and k+1 is (2k + 1) * 2^(-kBias - kMant). A tie there goes to the even code,
// k+1 for odd k (threshold = the midpoint) and k for even k (threshold = the next
// f32 above it). The number of thresholds at or below |f| is the code; the last
// midpoint leads to the smallest normal code 2^kMant, so |f| just below the
// smallest normal rounds into it correctly.
template <int kMant, int kBias, int kStep>
inline constexpr std::int32_t kSubnormalThreshold = f32_bits_of(2 * kStep + 1, -kBias - kMant) +
                                                    ((kStep & 1) ? 0 : 1);

template <int kMant, int kBias, int... kSteps>
EPX_HD inline std::int32_t round_subnormal_by_thresholds(std::int32_t abs,
                                                         std::integer_sequence<int, kSteps...>) {
  return (static_cast<std::int32_t>(abs >= kSubnormalThreshold<kMant, kBias, kSteps>) + ... + 0);
}

// Subnormal results of a format with many subnormals (f16): shift the significand
// (with its implicit 1) right by one more bit per binade below the smallest
// normal and round on the dropped bits. Shifts past 31 are capped: the value is
// then below half the smallest subnormal and still rounds to 0.
template <int kMant, int kBias>
EPX_HD inline std::int32_t round_subnormal_by_shift(std::int32_t abs) {
  const std::int32_t e32 = abs >> 23;
  std::int32_t shift = 151 - kBias - kMant - e32;
  shift = shift > 31 ? 31 : (shift < 1 ? 1 : shift);  // < 1 only for normal |f| (unused)
  const std::uint32_t sig = (static_cast<std::uint32_t>(abs) & 0x007FFFFFu) | 0x00800000u;
  const std::uint32_t kept = sig >> shift;
  const std::uint32_t rem = sig & ((1u << shift) - 1u);
  const std::uint32_t half = 1u << (shift - 1);
  return static_cast<std::int32_t>(kept + static_cast<std::uint32_t>(rem + (kept & 1u) > half));
}

// Rounds |f| (finite or infinite; NaN is the caller's business) to nearest even.
// Results at or above kMaxBits (the f32 bits of the largest finite value)
// saturate to kMaxCode; see the header comment for why that is the threshold.
template <int kMant, int kBias, std::int32_t kMaxBits, std::int32_t kMaxCode>
EPX_HD inline std::uint32_t round_abs_to_minifloat(std::int32_t abs) {
  constexpr std::int32_t kMinNormalBits = (127 + 1 - kBias) << 23;
  std::int32_t subnormal;
  if constexpr (kMant <= 3) {
    subnormal = round_subnormal_by_thresholds<kMant, kBias>(
        abs, std::make_integer_sequence<int, (1 << kMant)>{});
  } else {
    subnormal = round_subnormal_by_shift<kMant, kBias>(abs);
  }
  const std::int32_t code = abs < kMinNormalBits ? subnormal : round_normal<kMant, kBias>(abs);
  return static_cast<std::uint32_t>(abs >= kMaxBits ? kMaxCode : code);
}

// Decodes a code of a binary format with kExp exponent bits, kMant mantissa
// bits and bias kBias to f32 bits (always exact: every such value is an f32).
// kIeeeSpecials: the all-ones exponent holds inf/NaN (E5M2, f16); otherwise
// only the all-ones code is NaN (E4M3FN) and the rest of that binade is finite.
template <int kExp, int kMant, int kBias, bool kIeeeSpecials>
EPX_HD inline std::uint32_t minifloat_to_f32_bits(std::uint32_t code) {
  constexpr std::uint32_t kExpMask = (1u << kExp) - 1u;
  constexpr std::uint32_t kMantMask = (1u << kMant) - 1u;
  const std::uint32_t sign = ((code >> (kExp + kMant)) & 1u) << 31;
  const std::uint32_t e = (code >> kMant) & kExpMask;
  std::uint32_t m = code & kMantMask;
  if (e == kExpMask) {
    if (kIeeeSpecials) {
      return m == 0 ? (sign | kF32Inf) : (sign | kF32QuietNan | (m << (23 - kMant)));
    }
    if (m == kMantMask) return sign | kF32QuietNan | (m << (23 - kMant));
  }
  if (e == 0) {
    if (m == 0) return sign;  // signed zero
    // Subnormal m * 2^(1 - kBias - kMant): shift m up until its leading 1 sits at
    // the implicit-bit position, lowering the exponent once per step.
    std::uint32_t e32 = 127 + 1 - kBias;
    while ((m & (1u << kMant)) == 0) {
      m <<= 1;
      --e32;
    }
    return sign | (e32 << 23) | ((m & kMantMask) << (23 - kMant));
  }
  return sign | ((e + 127 - kBias) << 23) | (m << (23 - kMant));
}

}  // namespace detail

// ---- FP8 E4M3FN (OCP): bias 7, max 448 (0x7E), NaN 0x7F/0xFF, no infinities ----

constexpr float kE4m3Max = 448.0f;

namespace detail {

// f32 addition, never contracted with a neighbouring multiply into an FMA.
EPX_HD inline float add_rn(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}

// The E4M3 code without sign (0x00-0x7F) of |f|, given as f32 bits with the sign
// cleared (abs = bits & 0x7FFFFFFF; any value, NaN and infinity included). The
// same function as round_abs_to_minifloat<3, 7, 0x43E00000, 0x7E> plus the NaN
// code 0x7F (tests/unit/test_fp8_exhaustive.cpp checks all 2^32 inputs), written
// for CPU loops: a handful of operations per element, no per-lane variable shift,
// no branch, and every select a mask on a value computed on every lane (a
// ?: around the float addition would leave GCC a branch it cannot if-convert
// without -fno-trapping-math, and the loop would not vectorise). 32-bit result,
// so a caller's loop does not narrow its lanes to bytes before it has to.
//  - Saturation: clamp |f| to 448 first (integer min on the bits). Everything at
//    or above 448, inf too, has code 0x7E, which is also the code of 448.
//  - Normal results (|f| >= 2^-6): keep exponent and 3 mantissa bits, rounding on
//    the 20 dropped bits by adding 0x7FFFF plus the lowest kept bit (ties to
//    even; a carry runs into the exponent, the next binade), then rebias from
//    127 to 7, i.e. subtract 120 << 3 from the kept bits. Written as one shift
//    of (bits + 0x7FFFF + lsb - (120 << 23)): the rebias commutes with the
//    shift, and nothing overflows for 0 <= bits <= 0x43E00000. (Below 2^-7 the
//    sum is negative; that lane takes the subnormal result instead.)
//  - Subnormal results (|f| < 2^-6): the code is k = RNE(|f| / 2^-9), 2^-9 being
//    the E4M3 subnormal step. |f| + 2^14 lies in [2^14, 2^15), where consecutive
//    f32 are 2^-9 apart, and its f32 mantissa field is k; so the one IEEE
//    addition fl(|f| + 2^14) = 2^14 + k * 2^-9 rounds exactly as wanted (to
//    nearest, ties to the even mantissa, i.e. even k), and its bits minus those
//    of 2^14 are k. k = 8 (|f| rounding up to 2^-6) is 0x08, the smallest normal
//    code, as it should be. The sum is never subnormal (no flush-to-zero
//    effect); an f32-subnormal |f| read as 0 (denormals-are-zero) has k = 0,
//    its correct code anyway.
//  - NaN (bits above those of inf): 0x7F, ORed in (it has every bit of a code).
EPX_HD inline std::uint32_t e4m3_magnitude(std::int32_t abs) {
  constexpr std::int32_t kMaxBits = 0x43E00000;        // 448
  constexpr std::int32_t kMinNormalBits = 0x3C800000;  // 2^-6
  constexpr std::int32_t kMagicBits = 0x46800000;      // 2^14
  const std::int32_t a = abs < kMaxBits ? abs : kMaxBits;
  const std::int32_t normal = (a + (0x7FFFF - (120 << 23)) + ((a >> 20) & 1)) >> 20;
  const float sum = add_rn(bits_float(static_cast<std::uint32_t>(a)), 16384.0f);
  const std::int32_t subnormal = static_cast<std::int32_t>(float_bits(sum)) - kMagicBits;
  const std::int32_t is_subnormal = -static_cast<std::int32_t>(a < kMinNormalBits);
  const std::int32_t is_nan = -static_cast<std::int32_t>(abs > kF32InfBits);
  const std::int32_t code = normal ^ ((normal ^ subnormal) & is_subnormal);
  return static_cast<std::uint32_t>(code | (is_nan & 0x7F));
}

}  // namespace detail

EPX_HD inline std::uint8_t float_to_e4m3(float f) {
  const std::uint32_t u = float_bits(f);
  const std::uint32_t sign = (u >> 24) & 0x80u;
  return static_cast<std::uint8_t>(
      sign | detail::e4m3_magnitude(static_cast<std::int32_t>(u & detail::kF32AbsMask)));
}

EPX_HD inline float e4m3_to_float(std::uint8_t code) {
  return bits_float(detail::minifloat_to_f32_bits<4, 3, 7, false>(code));
}

// ---- FP8 E5M2: bias 15, max 57344 (0x7B), inf 0x7C, NaN 0x7D-0x7F ----

constexpr float kE5m2Max = 57344.0f;

EPX_HD inline std::uint8_t float_to_e5m2(float f) {
  const std::uint32_t u = float_bits(f);
  const auto abs = static_cast<std::int32_t>(u & detail::kF32AbsMask);
  const std::uint32_t sign = (u >> 24) & 0x80u;
  const std::uint32_t mag = detail::round_abs_to_minifloat<2, 15, 0x47600000, 0x7B>(abs);
  return static_cast<std::uint8_t>(sign | (abs > detail::kF32InfBits ? 0x7Eu : mag));
}

EPX_HD inline float e5m2_to_float(std::uint8_t code) {
  return bits_float(detail::minifloat_to_f32_bits<5, 2, 15, true>(code));
}

// ---- IEEE binary16: bias 15, max 65504 (0x7BFF) ----

constexpr float kF16Max = 65504.0f;

EPX_HD inline std::uint16_t float_to_f16(float f) {
  const std::uint32_t u = float_bits(f);
  const auto abs = static_cast<std::int32_t>(u & detail::kF32AbsMask);
  const std::uint32_t sign = (u >> 16) & 0x8000u;
  const std::uint32_t mag = detail::round_abs_to_minifloat<10, 15, 0x477FE000, 0x7BFF>(abs);
  return static_cast<std::uint16_t>(sign | (abs > detail::kF32InfBits ? 0x7E00u : mag));
}

EPX_HD inline float f16_to_float(std::uint16_t code) {
  return bits_float(detail::minifloat_to_f32_bits<5, 10, 15, true>(code));
}

// ---- bfloat16: the top half of an f32 ----

EPX_HD inline std::uint16_t float_to_bf16(float f) {
  const std::uint32_t u = float_bits(f);
  // Adding 0x7FFF plus the lowest kept bit rounds to nearest, ties to even; a
  // carry into the exponent is correct, up to infinity.
  const std::uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  const std::uint32_t nan = (u >> 16) | 0x0040u;  // keep sign and payload top, set quiet bit
  return static_cast<std::uint16_t>((u & detail::kF32AbsMask) > detail::kF32Inf ? nan : rounded);
}

EPX_HD inline float bf16_to_float(std::uint16_t bits) {
  return bits_float(static_cast<std::uint32_t>(bits) << 16);
}

}  // namespace epx::kernels
