// Element conversions of kernels/float_convert.hpp against the plain references
// of fp8_reference.hpp: every code decoded, every rounding boundary encoded,
// and a sweep over the whole f32 bit space at a prime stride.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>

#include "kernels/float_convert.hpp"
#include "tests/unit/fp8_reference.hpp"

namespace epx::kernels {
namespace {

using test::f32_bits;
using test::f32_from_bits;
using test::kRefE4m3;
using test::kRefE5m2;
using test::kRefF16;
using test::RefFormat;

constexpr RefFormat kRefBf16{8, 7, 127, true, 0, "bf16"};  // for decoding only
constexpr std::uint64_t kSweepStride = 16411;              // prime: hits every bit position

float decode(const RefFormat& f, std::uint32_t code) {
  if (&f == &kRefE4m3) return e4m3_to_float(static_cast<std::uint8_t>(code));
  if (&f == &kRefE5m2) return e5m2_to_float(static_cast<std::uint8_t>(code));
  return f16_to_float(static_cast<std::uint16_t>(code));
}

std::uint32_t encode(const RefFormat& f, float x) {
  if (&f == &kRefE4m3) return float_to_e4m3(x);
  if (&f == &kRefE5m2) return float_to_e5m2(x);
  return float_to_f16(x);
}

// Decoded value equals the formula; NaN stays NaN; signs (of zeros too) agree.
void expect_decodes_like_formula(const RefFormat& f, std::uint32_t code, float got) {
  const double want = test::ref_decode(f, code);
  SCOPED_TRACE(testing::Message() << f.name << " code 0x" << std::hex << code);
  EXPECT_EQ(std::signbit(got), std::signbit(want));
  if (std::isnan(want)) {
    EXPECT_TRUE(std::isnan(got));
  } else {
    EXPECT_EQ(static_cast<double>(got), want);
  }
}

TEST(Fp8Decode, E4m3AllCodesMatchFormula) {
  for (std::uint32_t c = 0; c < 256; ++c)
    expect_decodes_like_formula(kRefE4m3, c, decode(kRefE4m3, c));
  EXPECT_EQ(e4m3_to_float(0x7E), 448.0f);
  EXPECT_EQ(e4m3_to_float(0x01), std::ldexp(1.0f, -9));
  EXPECT_TRUE(std::isnan(e4m3_to_float(0x7F)));
  EXPECT_TRUE(std::isnan(e4m3_to_float(0xFF)));
}

TEST(Fp8Decode, E5m2AllCodesMatchFormula) {
  for (std::uint32_t c = 0; c < 256; ++c)
    expect_decodes_like_formula(kRefE5m2, c, decode(kRefE5m2, c));
  EXPECT_EQ(e5m2_to_float(0x7B), 57344.0f);
  EXPECT_EQ(e5m2_to_float(0x7C), std::numeric_limits<float>::infinity());
  EXPECT_EQ(e5m2_to_float(0xFC), -std::numeric_limits<float>::infinity());
  EXPECT_EQ(e5m2_to_float(0x01), std::ldexp(1.0f, -16));
}

TEST(Fp8Decode, F16AndBf16AllCodesMatchFormula) {
  for (std::uint32_t c = 0; c < 65536; ++c) {
    expect_decodes_like_formula(kRefF16, c, f16_to_float(static_cast<std::uint16_t>(c)));
    expect_decodes_like_formula(kRefBf16, c, bf16_to_float(static_cast<std::uint16_t>(c)));
  }
}

// For every pair of adjacent finite codes: the exact midpoint goes to the even
// code, one f32 ulp either side goes to the nearer code, the codes' own values
// come back unchanged; the same with the sign bit set.
void check_rounding_boundaries(const RefFormat& f) {
  const std::uint32_t max_code = test::ref_max_code(f);
  for (std::uint32_t c = 0; c < max_code; ++c) {
    const double lo = test::ref_decode(f, c), hi = test::ref_decode(f, c + 1);
    const double mid_exact = (lo + hi) / 2;
    const float mid = static_cast<float>(mid_exact);
    ASSERT_EQ(static_cast<double>(mid), mid_exact) << "midpoint not an f32";
    const std::uint32_t even = (c & 1u) == 0 ? c : c + 1;
    for (const std::uint32_t sign : {0u, test::ref_sign_bit(f)}) {
      const float s = sign ? -1.0f : 1.0f;
      SCOPED_TRACE(testing::Message()
                   << f.name << " codes 0x" << std::hex << (c | sign) << "/0x" << ((c + 1) | sign));
      EXPECT_EQ(encode(f, s * static_cast<float>(lo)), c | sign);
      EXPECT_EQ(encode(f, s * static_cast<float>(hi)), (c + 1) | sign);
      EXPECT_EQ(encode(f, s * mid), even | sign);
      EXPECT_EQ(encode(f, s * std::nextafter(mid, 0.0f)), c | sign);
      EXPECT_EQ(encode(f, s * std::nextafter(mid, 1e30f)), (c + 1) | sign);
    }
  }
}

TEST(Fp8Encode, E4m3EveryRoundingBoundary) { check_rounding_boundaries(kRefE4m3); }
TEST(Fp8Encode, E5m2EveryRoundingBoundary) { check_rounding_boundaries(kRefE5m2); }
TEST(Fp8Encode, F16EveryRoundingBoundary) { check_rounding_boundaries(kRefF16); }

// Boundary points also agree with the exhaustive reference (checks the reference
// and the implementation against each other on the hardest inputs).
TEST(Fp8Encode, BoundariesAgreeWithExhaustiveReference) {
  for (const RefFormat* f : {&kRefE4m3, &kRefE5m2}) {
    for (std::uint32_t c = 0; c < test::ref_max_code(*f); ++c) {
      const float mid =
          static_cast<float>((test::ref_decode(*f, c) + test::ref_decode(*f, c + 1)) / 2);
      for (const float x : {mid, std::nextafter(mid, 0.0f), std::nextafter(mid, 1e30f), -mid}) {
        EXPECT_EQ(encode(*f, x), test::ref_encode_exhaustive(*f, x)) << f->name << " x=" << x;
      }
    }
  }
}

TEST(Fp8Encode, E4m3SubnormalsAndZeros) {
  EXPECT_EQ(float_to_e4m3(0.0f), 0x00);
  EXPECT_EQ(float_to_e4m3(-0.0f), 0x80);
  EXPECT_EQ(float_to_e4m3(std::ldexp(1.0f, -9)), 0x01);   // smallest subnormal
  EXPECT_EQ(float_to_e4m3(std::ldexp(7.0f, -9)), 0x07);   // largest subnormal
  EXPECT_EQ(float_to_e4m3(std::ldexp(1.0f, -6)), 0x08);   // smallest normal
  EXPECT_EQ(float_to_e4m3(std::ldexp(1.0f, -10)), 0x00);  // tie with 0: even
  EXPECT_EQ(float_to_e4m3(std::nextafter(std::ldexp(1.0f, -10), 1.0f)), 0x01);
  EXPECT_EQ(float_to_e4m3(-std::ldexp(3.0f, -10)), 0x82);  // tie 1.5 quanta: even 2
  EXPECT_EQ(float_to_e4m3(std::ldexp(15.0f, -10)), 0x08);  // tie largest subnormal / normal
  // f32 subnormals are far below half the smallest subnormal.
  EXPECT_EQ(float_to_e4m3(std::numeric_limits<float>::denorm_min()), 0x00);
  EXPECT_EQ(float_to_e4m3(-std::numeric_limits<float>::min()), 0x80);
}

TEST(Fp8Encode, E5m2SubnormalsAndZeros) {
  EXPECT_EQ(float_to_e5m2(-0.0f), 0x80);
  EXPECT_EQ(float_to_e5m2(std::ldexp(1.0f, -16)), 0x01);
  EXPECT_EQ(float_to_e5m2(std::ldexp(1.0f, -17)), 0x00);
  EXPECT_EQ(float_to_e5m2(std::ldexp(3.0f, -17)), 0x02);
  EXPECT_EQ(float_to_e5m2(std::ldexp(7.0f, -17)), 0x04);  // tie largest subnormal / normal
  EXPECT_EQ(float_to_e5m2(std::numeric_limits<float>::denorm_min()), 0x00);
}

TEST(Fp8Encode, Saturation) {
  const float inf = std::numeric_limits<float>::infinity();
  const float fmax = std::numeric_limits<float>::max();
  // E4M3: 448 is the largest finite; 464 is the tie with the would-be 480 (even: 448).
  for (const float x : {448.0f, 449.0f, 463.9f, 464.0f, 464.1f, 480.0f, 1e6f, fmax, inf}) {
    EXPECT_EQ(float_to_e4m3(x), 0x7E) << x;
    EXPECT_EQ(float_to_e4m3(-x), 0xFE) << -x;
  }
  EXPECT_EQ(float_to_e4m3(std::nextafter(448.0f, 0.0f)), 0x7E);
  EXPECT_EQ(float_to_e4m3(432.0f), 0x7E);  // tie between 416 (0x7D) and 448: even
  for (const float x : {57344.0f, 61439.0f, 61440.0f, 65536.0f, 1e9f, fmax, inf}) {
    EXPECT_EQ(float_to_e5m2(x), 0x7B) << x;
    EXPECT_EQ(float_to_e5m2(-x), 0xFB) << -x;
  }
  for (const float x : {65504.0f, 65519.0f, 65520.0f, 65536.0f, 1e9f, fmax, inf}) {
    EXPECT_EQ(float_to_f16(x), 0x7BFF) << x;
    EXPECT_EQ(float_to_f16(-x), 0xFBFF) << -x;
  }
}

TEST(Fp8Encode, NanKeepsSign) {
  const float qnan = f32_from_bits(0x7FC00000u), snan = f32_from_bits(0x7F800001u);
  const float neg_nan = f32_from_bits(0xFFC00000u), payload = f32_from_bits(0x7FBFFFFFu);
  for (const float x : {qnan, snan, payload}) {
    EXPECT_EQ(float_to_e4m3(x), 0x7F);
    EXPECT_EQ(float_to_e5m2(x), 0x7E);
    EXPECT_EQ(float_to_f16(x), 0x7E00);
  }
  EXPECT_EQ(float_to_e4m3(neg_nan), 0xFF);
  EXPECT_EQ(float_to_e5m2(neg_nan), 0xFE);
  EXPECT_EQ(float_to_f16(neg_nan), 0xFE00);
  EXPECT_TRUE(std::isnan(e5m2_to_float(float_to_e5m2(snan))));
}

// The whole f32 bit space at a prime stride, against the references.
TEST(Fp8Encode, SweepMatchesReferences) {
  const test::RefSortedEncoder f16_ref(kRefF16);
  std::uint64_t checked = 0;
  for (std::uint64_t u = 0; u < (1ull << 32); u += kSweepStride) {
    const float x = f32_from_bits(static_cast<std::uint32_t>(u));
    ASSERT_EQ(float_to_e4m3(x), test::ref_encode_exhaustive(kRefE4m3, x))
        << "bits 0x" << std::hex << u;
    ASSERT_EQ(float_to_e5m2(x), test::ref_encode_exhaustive(kRefE5m2, x))
        << "bits 0x" << std::hex << u;
    ASSERT_EQ(float_to_f16(x), f16_ref.encode(x)) << "bits 0x" << std::hex << u;
    if (!std::isnan(x)) {
      ASSERT_EQ(float_to_bf16(x), test::ref_bf16(x)) << "bits 0x" << std::hex << u;
    }
    ++checked;
  }
  EXPECT_GT(checked, 260000u);
}

TEST(Fp8Encode, RoundTripEveryCode) {
  for (std::uint32_t c = 0; c < 256; ++c) {
    const auto code = static_cast<std::uint8_t>(c);
    if (!test::ref_is_nan(kRefE4m3, c)) {
      EXPECT_EQ(float_to_e4m3(e4m3_to_float(code)), c);
    }
    if (test::ref_is_inf(kRefE5m2, c)) {
      EXPECT_EQ(float_to_e5m2(e5m2_to_float(code)), (c & 0x80u) | 0x7Bu);  // saturates
    } else if (!test::ref_is_nan(kRefE5m2, c)) {
      EXPECT_EQ(float_to_e5m2(e5m2_to_float(code)), c);
    }
  }
  for (std::uint32_t c = 0; c < 65536; ++c) {
    const auto code = static_cast<std::uint16_t>(c);
    if (!test::ref_is_nan(kRefF16, c) && !test::ref_is_inf(kRefF16, c)) {
      EXPECT_EQ(float_to_f16(f16_to_float(code)), c);
    }
    if (!test::ref_is_nan(kRefBf16, c)) {
      EXPECT_EQ(float_to_bf16(bf16_to_float(code)), c);
    }
  }
}

TEST(Bf16Encode, TiesToEvenAndNeighbours) {
  // For a spread of bf16 codes b: b's value plus exactly half a bf16 ulp is a tie.
  for (std::uint32_t b = 0; b < 0x7F80u; b += 7) {
    const std::uint32_t tie = (b << 16) | 0x8000u;
    const std::uint32_t even = (b & 1u) == 0 ? b : b + 1;
    for (const std::uint32_t sign : {0u, 0x80000000u}) {
      EXPECT_EQ(float_to_bf16(f32_from_bits(tie | sign)), even | (sign >> 16)) << std::hex << b;
      EXPECT_EQ(float_to_bf16(f32_from_bits((tie - 1) | sign)), b | (sign >> 16)) << std::hex << b;
      EXPECT_EQ(float_to_bf16(f32_from_bits((tie + 1) | sign)), (b + 1) | (sign >> 16));
    }
  }
  EXPECT_EQ(float_to_bf16(1.0f + std::ldexp(1.0f, -8)), 0x3F80);        // 1 + half ulp: even 1.0
  EXPECT_EQ(float_to_bf16(std::numeric_limits<float>::max()), 0x7F80);  // IEEE: rounds to inf
  EXPECT_EQ(float_to_bf16(-std::numeric_limits<float>::infinity()), 0xFF80);
  EXPECT_EQ(float_to_bf16(-0.0f), 0x8000);
}

TEST(Bf16Encode, NanStaysQuietNanWithSign) {
  for (const std::uint32_t u : {0x7F800001u, 0x7FC00000u, 0x7FFFFFFFu, 0xFF800001u, 0xFFC12345u}) {
    const std::uint16_t b = float_to_bf16(f32_from_bits(u));
    EXPECT_EQ(b & 0x7F80u, 0x7F80u) << std::hex << u;  // exponent all ones
    EXPECT_NE(b & 0x0040u, 0u) << std::hex << u;       // quiet bit
    EXPECT_EQ(b >> 15, u >> 31) << std::hex << u;      // sign
  }
}

}  // namespace
}  // namespace epx::kernels
