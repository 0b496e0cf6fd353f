// Per-token 1x128 FP8 quantization (kernels/quant.hpp and the public
// epx::kernels API) against a reference that follows the DESIGN.md recipe line
// by line in plain f32, with its own E4M3 encoder (nearest-code search) and its
// own power-of-two rounding (frexp). Bytes and scales must match bit for bit.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <epx/error.hpp>
#include <epx/kernels.hpp>
#include <limits>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "kernels/quant.hpp"
#include "tests/unit/fp8_reference.hpp"

namespace epx::kernels {
namespace {

using test::f32_bits;
using test::f32_from_bits;

constexpr int kBlock = 128;

// ---- reference ----

struct Quantized {
  std::vector<std::uint8_t> q;
  std::vector<float> scales;
};

// 2^ceil(log2(s)) by frexp: s = m * 2^e with m in [0.5, 1); s is a power of
// two exactly when m == 0.5.
float ref_pow2_ceil(float s) {
  if (std::isinf(s)) return s;
  int e = 0;
  const float m = std::frexp(s, &e);
  return m == 0.5f ? s : std::ldexp(1.0f, e);
}

std::uint8_t ref_e4m3_of_product(float x, float y) {
  // A NaN product takes x's sign (documented in fp8_quant.hpp).
  if (std::isnan(y)) return std::signbit(x) ? 0xFF : 0x7F;
  return static_cast<std::uint8_t>(test::ref_encode_exhaustive(test::kRefE4m3, y));
}

Quantized ref_quantize(const std::vector<float>& x, std::int64_t rows, std::int64_t hidden,
                       bool ue8m0) {
  Quantized out{std::vector<std::uint8_t>(x.size()), {}};
  for (std::int64_t r = 0; r < rows; ++r) {
    for (std::int64_t b = 0; b < hidden / kBlock; ++b) {
      const float* xb = x.data() + r * hidden + b * kBlock;
      float amax = 0.0f;
      for (int i = 0; i < kBlock; ++i) {
        if (!std::isnan(xb[i])) amax = std::max(amax, std::fabs(xb[i]));
      }
      const float a = std::fmax(amax, 1e-4f);
      const float scale = ue8m0 ? ref_pow2_ceil(a / 448.0f) : a / 448.0f;
      out.scales.push_back(scale);
      for (int i = 0; i < kBlock; ++i) {
        const float y = ue8m0 ? xb[i] / scale : xb[i] * (448.0f / a);
        out.q[r * hidden + b * kBlock + i] = ref_e4m3_of_product(xb[i], y);
      }
    }
  }
  return out;
}

// ---- inputs ----

enum class Spread { normal, wide };

// Never all zeros: normal values with a per-row magnitude, or per-element
// magnitudes over 2^-40 .. 2^40 (plenty underflow to E4M3 subnormals and zero),
// with some exact zeros of both signs mixed in.
std::vector<float> random_rows(std::int64_t rows, std::int64_t hidden, Spread spread,
                               std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int> row_exp(-20, 20), elem_exp(-40, 40), pick(0, 63);
  std::vector<float> x(static_cast<std::size_t>(rows * hidden));
  for (std::int64_t r = 0; r < rows; ++r) {
    const int e = row_exp(rng);
    for (std::int64_t i = 0; i < hidden; ++i) {
      float v = normal(rng);
      v = std::ldexp(v, spread == Spread::normal ? e : elem_exp(rng));
      const int p = pick(rng);
      if (p == 0) v = 0.0f;
      if (p == 1) v = -0.0f;
      x[r * hidden + i] = v;
    }
  }
  return x;
}

std::vector<std::uint16_t> to_bf16_bits(const std::vector<float>& x) {
  std::vector<std::uint16_t> out(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) out[i] = test::ref_bf16(x[i]);
  return out;
}

std::vector<float> bf16_values(const std::vector<std::uint16_t>& bits) {
  std::vector<float> out(bits.size());
  for (std::size_t i = 0; i < bits.size(); ++i)
    out[i] = f32_from_bits(std::uint32_t{bits[i]} << 16);
  return out;
}

Quantized run_quantize(const void* x, DType dtype, std::int64_t rows, std::int64_t hidden,
                       bool ue8m0) {
  Quantized out{std::vector<std::uint8_t>(rows * hidden, 0xAA),
                std::vector<float>(rows * hidden / kBlock, -1.0f)};
  quantize_rows_fp8(x, dtype, rows, hidden, out.q.data(), out.scales.data(), ue8m0);
  return out;
}

void expect_bit_exact(const Quantized& got, const Quantized& want) {
  ASSERT_EQ(got.q.size(), want.q.size());
  ASSERT_EQ(got.scales.size(), want.scales.size());
  for (std::size_t i = 0; i < want.scales.size(); ++i) {
    ASSERT_EQ(f32_bits(got.scales[i]), f32_bits(want.scales[i]))
        << "scale " << i << ": " << got.scales[i] << " vs " << want.scales[i];
  }
  for (std::size_t i = 0; i < want.q.size(); ++i) {
    ASSERT_EQ(int{got.q[i]}, int{want.q[i]}) << "element " << i;
  }
}

// ---- random data, all shapes and options ----

using QuantCase = std::tuple<std::int64_t /*hidden*/, DType, bool /*ue8m0*/, Spread>;

class QuantizeRandom : public testing::TestWithParam<QuantCase> {};

TEST_P(QuantizeRandom, MatchesReferenceBitExact) {
  const auto [hidden, dtype, ue8m0, spread] = GetParam();
  const std::int64_t rows = hidden > 1024 ? 3 : 7;
  const auto seed =
      static_cast<std::uint32_t>(hidden * 31 + (ue8m0 ? 7 : 0) + (spread == Spread::wide ? 3 : 0));
  std::vector<float> x = random_rows(rows, hidden, spread, seed);
  std::vector<std::uint16_t> xb;
  const void* input = x.data();
  if (dtype == DType::bf16) {
    xb = to_bf16_bits(x);
    x = bf16_values(xb);  // the values the kernel actually sees
    input = xb.data();
  }
  const Quantized want = ref_quantize(x, rows, hidden, ue8m0);
  const Quantized got = run_quantize(input, dtype, rows, hidden, ue8m0);
  expect_bit_exact(got, want);

  // Deterministic, and the per-row entry point writes the same bytes.
  expect_bit_exact(run_quantize(input, dtype, rows, hidden, ue8m0), got);
  Quantized by_row{std::vector<std::uint8_t>(rows * hidden),
                   std::vector<float>(rows * hidden / kBlock)};
  for (std::int64_t r = 0; r < rows; ++r) {
    quantize_row_fp8(static_cast<const char*>(input) + r * hidden * dtype_size(dtype), dtype,
                     hidden, by_row.q.data() + r * hidden,
                     by_row.scales.data() + r * hidden / kBlock, ue8m0);
  }
  expect_bit_exact(by_row, got);
}

std::string quant_case_name(const testing::TestParamInfo<QuantCase>& info) {
  const auto& [hidden, dtype, ue8m0, spread] = info.param;
  return std::string("h") + std::to_string(hidden) + "_" + dtype_name(dtype) +
         (ue8m0 ? "_ue8m0" : "_f32scale") + (spread == Spread::wide ? "_wide" : "_normal");
}

INSTANTIATE_TEST_SUITE_P(Shapes, QuantizeRandom,
                         testing::Combine(testing::Values<std::int64_t>(128, 256, 7168),
                                          testing::Values(DType::f32, DType::bf16), testing::Bool(),
                                          testing::Values(Spread::normal, Spread::wide)),
                         quant_case_name);

// ---- special blocks ----

TEST(Quantize, AllZeroBlockUsesTheFloor) {
  std::vector<float> x(2 * kBlock, 0.0f);
  x[5] = -0.0f;
  x[kBlock + 1] = 3.0f;  // second block is not zero
  for (const bool ue8m0 : {false, true}) {
    const Quantized got = run_quantize(x.data(), DType::f32, 1, 2 * kBlock, ue8m0);
    expect_bit_exact(got, ref_quantize(x, 1, 2 * kBlock, ue8m0));
    // 1e-4 / 448 ~ 2.23e-7; the next power of two up is 2^-22 ~ 2.38e-7.
    EXPECT_EQ(got.scales[0], ue8m0 ? std::ldexp(1.0f, -22) : 1e-4f / 448.0f);
    for (int i = 0; i < kBlock; ++i) EXPECT_EQ(got.q[i], i == 5 ? 0x80 : 0x00) << i;
  }
}

TEST(Quantize, Ue8m0ScaleAtAndAroundPowerOfTwoQuotients) {
  // amax 56: a / 448 = 2^-3 exactly, so the scale stays 2^-3; amax 57 needs 2^-2;
  // amax 448: scale 1 and multiplier 1.
  const float amaxes[] = {56.0f, 57.0f, 448.0f, std::nextafter(56.0f, 0.0f)};
  const float want[] = {0.125f, 0.25f, 1.0f, 0.125f};
  std::vector<float> x(4 * kBlock, 1.0f);
  for (int b = 0; b < 4; ++b) x[b * kBlock + 7] = -amaxes[b];
  const Quantized got = run_quantize(x.data(), DType::f32, 1, 4 * kBlock, true);
  expect_bit_exact(got, ref_quantize(x, 1, 4 * kBlock, true));
  for (int b = 0; b < 4; ++b) EXPECT_EQ(got.scales[b], want[b]) << "amax " << amaxes[b];
}

TEST(Quantize, SingleHugeValueDominatesItsBlock) {
  std::vector<float> x = random_rows(1, 2 * kBlock, Spread::normal, 11);
  x[17] = 1e30f;
  x[kBlock + 3] = -3e38f;
  for (const bool ue8m0 : {false, true}) {
    const Quantized got = run_quantize(x.data(), DType::f32, 1, 2 * kBlock, ue8m0);
    expect_bit_exact(got, ref_quantize(x, 1, 2 * kBlock, ue8m0));
    if (!ue8m0) {  // with ue8m0 the largest element lands in [224, 448]
      EXPECT_EQ(got.q[17], 0x7E);
      EXPECT_EQ(got.q[kBlock + 3], 0xFE);
      EXPECT_EQ(got.scales[0], 1e30f / 448.0f);
    }
    for (int i = 0; i < kBlock; ++i) {
      if (i != 17) {
        EXPECT_EQ(got.q[i] & 0x7F, 0) << "element " << i << " should underflow";
      }
    }
  }
}

TEST(Quantize, AmaxElementMapsToMaxCodeAndUe8m0ScalesArePowersOfTwo) {
  const std::vector<float> x = random_rows(4, 1024, Spread::wide, 5);
  for (const bool ue8m0 : {false, true}) {
    const Quantized got = run_quantize(x.data(), DType::f32, 4, 1024, ue8m0);
    for (std::size_t b = 0; b < got.scales.size(); ++b) {
      float amax = 0.0f;
      for (int i = 0; i < kBlock; ++i) amax = std::max(amax, std::fabs(x[b * kBlock + i]));
      const float a = std::max(amax, 1e-4f);
      if (ue8m0) {
        EXPECT_EQ(f32_bits(got.scales[b]) & 0x007FFFFFu, 0u) << "scale " << got.scales[b];
        EXPECT_GE(got.scales[b], a / 448.0f);
        EXPECT_LT(got.scales[b], 2.0f * (a / 448.0f));
      }
      if (amax < 1e-4f) continue;
      for (int i = 0; i < kBlock; ++i) {
        if (std::fabs(x[b * kBlock + i]) == amax && !ue8m0) {
          EXPECT_EQ(got.q[b * kBlock + i] & 0x7F, 0x7E);
        }
      }
    }
  }
}

TEST(Quantize, NanIsIgnoredByAmaxAndEncodedAsNan) {
  std::vector<float> x = random_rows(1, kBlock, Spread::normal, 3);
  x[9] = std::numeric_limits<float>::quiet_NaN();
  x[10] = -std::numeric_limits<float>::quiet_NaN();
  for (const bool ue8m0 : {false, true}) {
    std::vector<float> clean = x;
    clean[9] = clean[10] = 0.0f;
    const Quantized got = run_quantize(x.data(), DType::f32, 1, kBlock, ue8m0);
    expect_bit_exact(got, ref_quantize(x, 1, kBlock, ue8m0));
    EXPECT_EQ(got.scales[0], run_quantize(clean.data(), DType::f32, 1, kBlock, ue8m0).scales[0]);
    EXPECT_EQ(got.q[9], 0x7F);
    EXPECT_EQ(got.q[10], 0xFF);
  }
}

TEST(Quantize, InfinityMakesAnInfiniteScale) {
  std::vector<float> x = random_rows(1, kBlock, Spread::normal, 4);
  x[0] = std::numeric_limits<float>::infinity();
  x[1] = -std::numeric_limits<float>::infinity();
  for (const bool ue8m0 : {false, true}) {
    const Quantized got = run_quantize(x.data(), DType::f32, 1, kBlock, ue8m0);
    expect_bit_exact(got, ref_quantize(x, 1, kBlock, ue8m0));
    EXPECT_TRUE(std::isinf(got.scales[0]));
    EXPECT_EQ(got.q[0], 0x7F);
    EXPECT_EQ(got.q[1], 0xFF);
  }
}

// ---- dequantization ----

TEST(Dequantize, ExactProductAndErrorBound) {
  const std::int64_t rows = 3, hidden = 512;
  for (const Spread spread : {Spread::normal, Spread::wide}) {
    const std::vector<float> x = random_rows(rows, hidden, spread, 21);
    for (const bool ue8m0 : {false, true}) {
      const Quantized qz = run_quantize(x.data(), DType::f32, rows, hidden, ue8m0);
      std::vector<float> out(x.size());
      std::vector<std::uint16_t> out_bf16(x.size());
      dequantize_rows_fp8(qz.q.data(), qz.scales.data(), rows, hidden, out.data(), DType::f32);
      dequantize_rows_fp8(qz.q.data(), qz.scales.data(), rows, hidden, out_bf16.data(),
                          DType::bf16);
      for (std::size_t i = 0; i < x.size(); ++i) {
        const float scale = qz.scales[i / kBlock];
        const float want = static_cast<float>(test::ref_decode(test::kRefE4m3, qz.q[i])) * scale;
        ASSERT_EQ(f32_bits(out[i]), f32_bits(want)) << i;
        ASSERT_EQ(out_bf16[i], test::ref_bf16(want)) << i;
        // E4M3 keeps 3 mantissa bits (relative error <= 2^-4) and has an absolute
        // step of 2^-9 * scale below its smallest normal (error <= 2^-10 * scale).
        const double bound = 0.0626 * std::fabs(x[i]) + 0.000977 * scale * 1.001;
        ASSERT_LE(std::fabs(static_cast<double>(out[i]) - x[i]), bound) << i << " x=" << x[i];
      }
    }
  }
}

// ---- conversion and combine helpers ----

TEST(Convert, EveryPairMatchesElementFunctions) {
  const DType dtypes[] = {DType::f32, DType::bf16, DType::f16, DType::e4m3, DType::e5m2};
  // Source data: every 16-bit pattern as f32 high halves, plus some wide values.
  std::vector<float> src_f32;
  for (std::uint32_t c = 0; c < 65536; c += 3)
    src_f32.push_back(f32_from_bits((c << 16) | (c & 0xFFFF)));
  const auto n = static_cast<std::int64_t>(src_f32.size());
  for (const DType from : dtypes) {
    std::vector<std::uint8_t> src(n * dtype_size(from));
    convert(src_f32.data(), DType::f32, src.data(), from, n);
    for (const DType to : dtypes) {
      std::vector<std::uint8_t> dst(n * dtype_size(to));
      convert(src.data(), from, dst.data(), to, n);
      for (std::int64_t i = 0; i < n; ++i) {
        float v = 0.0f;
        switch (from) {
          case DType::f32:
            std::memcpy(&v, src.data() + 4 * i, 4);
            break;
          case DType::bf16:
            v = bf16_to_float(reinterpret_cast<const std::uint16_t*>(src.data())[i]);
            break;
          case DType::f16:
            v = f16_to_float(reinterpret_cast<const std::uint16_t*>(src.data())[i]);
            break;
          case DType::e4m3:
            v = e4m3_to_float(src[i]);
            break;
          default:
            v = e5m2_to_float(src[i]);
            break;
        }
        if (from == to) {
          ASSERT_EQ(std::memcmp(dst.data() + i * dtype_size(to), src.data() + i * dtype_size(from),
                                dtype_size(to)),
                    0);
          continue;
        }
        std::uint32_t want = 0, got = 0;
        switch (to) {
          case DType::f32:
            want = f32_bits(v);
            std::memcpy(&got, dst.data() + 4 * i, 4);
            break;
          case DType::bf16:
            want = float_to_bf16(v);
            got = reinterpret_cast<std::uint16_t*>(dst.data())[i];
            break;
          case DType::f16:
            want = float_to_f16(v);
            got = reinterpret_cast<std::uint16_t*>(dst.data())[i];
            break;
          case DType::e4m3:
            want = float_to_e4m3(v);
            got = dst[i];
            break;
          default:
            want = float_to_e5m2(v);
            got = dst[i];
            break;
        }
        ASSERT_EQ(got, want) << dtype_name(from) << "->" << dtype_name(to) << " element " << i;
      }
    }
  }
}

TEST(Convert, RejectsNonFloatDtypes) {
  float a[4] = {}, b[4] = {};
  EXPECT_THROW(convert(a, DType::i32, b, DType::f32, 4), Error);
  try {
    convert(a, DType::f32, b, DType::i64, 4);
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::InvalidArgument);
    EXPECT_NE(std::string(e.what()).find("i64"), std::string::npos) << e.what();
  }
  convert(nullptr, DType::f32, nullptr, DType::bf16, 0);  // empty is fine
}

// ---- argument errors ----

// Runs fn, expects epx::Error(InvalidArgument) whose message contains every part.
template <class Fn>
void expect_invalid(Fn&& fn, std::initializer_list<const char*> parts) {
  try {
    fn();
    ADD_FAILURE() << "expected epx::Error(InvalidArgument)";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::InvalidArgument) << e.what();
    for (const char* p : parts)
      EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
  }
}

TEST(QuantizeArgs, InternalFunctionsCheckHiddenAndDtype) {
  std::vector<float> x(200);
  std::vector<std::uint8_t> q(200);
  std::vector<float> s(2);
  expect_invalid(
      [&] { quantize_rows_fp8(x.data(), DType::f32, 1, 100, q.data(), s.data(), false); },
      {"quantize_rows_fp8", "hidden", "100", "128"});
  expect_invalid([&] { quantize_row_fp8(x.data(), DType::f32, 200, q.data(), s.data(), true); },
                 {"quantize_row_fp8", "200", "128"});
  expect_invalid(
      [&] { quantize_rows_fp8(x.data(), DType::f16, 1, 128, q.data(), s.data(), false); },
      {"x_dtype", "f16"});
  expect_invalid([&] { dequantize_rows_fp8(q.data(), s.data(), 1, 128, x.data(), DType::e4m3); },
                 {"out_dtype", "e4m3"});
}

TEST(QuantizeArgs, PublicApiChecks) {
  const Tensor x = Tensor::zeros({4, 100}, DType::f32);
  expect_invalid([&] { per_token_cast_to_fp8(x); }, {"per_token_cast_to_fp8", "100", "128"});
  expect_invalid(
      [&] {
        per_token_cast_to_fp8(Tensor::zeros({2, 2, 128}, DType::bf16));
      },
      {"per_token_cast_to_fp8", "3 dimensions"});
  expect_invalid([&] { per_token_cast_to_fp8(Tensor::zeros({2, 128}, DType::f16)); }, {"f16"});
  expect_invalid([&] { per_token_cast_to_fp8(Tensor()); }, {"undefined"});
  float fake[256];
  const Tensor on_gpu = Tensor::wrap(fake, {2, 128}, DType::f32, Device::cuda);
  expect_invalid([&] { per_token_cast_to_fp8(on_gpu); }, {"per_token_cast_to_fp8", "cuda"});
  expect_invalid([&] { cast(on_gpu, DType::bf16); }, {"cast", "cuda"});
  expect_invalid([&] { cast(Tensor::zeros({3}, DType::i32), DType::f32); }, {"cast", "i32"});
  expect_invalid([&] { cast(Tensor::zeros({3}, DType::f32), DType::u8); }, {"cast", "u8"});

  const Tensor q = Tensor::zeros({2, 256}, DType::e4m3);
  expect_invalid(
      [&] {
        per_token_cast_back(q, Tensor::zeros({2, 3}, DType::f32));
      },
      {"per_token_cast_back", "scales", "[2,2]"});
  expect_invalid(
      [&] {
        per_token_cast_back(Tensor::zeros({2, 256}, DType::u8), Tensor::zeros({2, 2}, DType::f32));
      },
      {"per_token_cast_back", "e4m3"});
  expect_invalid(
      [&] {
        per_token_cast_back(q, Tensor::zeros({2, 2}, DType::f32), DType::f16);
      },
      {"per_token_cast_back", "f16"});
}

TEST(QuantizePublicApi, MatchesInternalAndRoundTrips) {
  const std::int64_t rows = 5, hidden = 384;
  const std::vector<float> xs = random_rows(rows, hidden, Spread::normal, 77);
  Tensor x = Tensor::empty({rows, hidden}, DType::f32);
  std::memcpy(x.raw(), xs.data(), xs.size() * sizeof(float));
  const Tensor xb = cast(x, DType::bf16);
  for (const bool ue8m0 : {false, true}) {
    for (const Tensor* in : {static_cast<const Tensor*>(&x), &xb}) {
      const auto [q, scales] = per_token_cast_to_fp8(*in, ue8m0);
      ASSERT_EQ(q.dtype(), DType::e4m3);
      ASSERT_EQ(q.shape(), (std::vector<std::int64_t>{rows, hidden}));
      ASSERT_EQ(scales.shape(), (std::vector<std::int64_t>{rows, hidden / kBlock}));
      const Quantized want = run_quantize(in->raw(), in->dtype(), rows, hidden, ue8m0);
      ASSERT_EQ(std::memcmp(q.raw(), want.q.data(), want.q.size()), 0);
      ASSERT_EQ(std::memcmp(scales.raw(), want.scales.data(), want.scales.size() * 4), 0);

      const Tensor back = per_token_cast_back(q, scales, DType::bf16);
      ASSERT_EQ(back.dtype(), DType::bf16);
      const Tensor back_f32 = per_token_cast_back(q, scales);
      for (std::int64_t i = 0; i < rows * hidden; ++i) {
        ASSERT_EQ(back.data<std::uint16_t>()[i], float_to_bf16(back_f32.data<float>()[i]));
      }
    }
  }
  // Empty inputs are fine.
  const auto [q0, s0] = per_token_cast_to_fp8(Tensor::zeros({0, 256}, DType::bf16));
  EXPECT_EQ(q0.numel(), 0);
  EXPECT_EQ(s0.shape(), (std::vector<std::int64_t>{0, 2}));
}

}  // namespace
}  // namespace epx::kernels
