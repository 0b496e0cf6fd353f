// Exhaustive checks of the E4M3 encoder and of the CPU quantization loops.
//
// 1. float_to_e4m3 (kernels/float_convert.hpp, the arithmetic that the CPU and
//    CUDA kernels share) against its previous formulation, kept below as
//    old_e4m3::code: pure integer arithmetic, subnormal results by counting
//    rounding thresholds. Every one of the 2^32 f32 bit patterns.
// 2. The vectorised loops of kernels/quant.cpp (AVX2 or baseline, whichever
//    this CPU runs) against the element functions of fp8_quant.hpp applied one
//    by one: every f32 pattern that can share a block with amax 448 (|x| <= 448
//    and every NaN), and every bf16 pattern inside blocks of every kind.
// test_fp8.cpp and test_quant.cpp check the same functions against independent
// references on every rounding boundary and on random data.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <random>
#include <thread>
#include <utility>
#include <vector>

#include "kernels/float_convert.hpp"
#include "kernels/fp8_quant.hpp"
#include "kernels/quant.hpp"

namespace epx::kernels {
namespace {

// ---- the previous float_to_e4m3 ----
//
// It was sign | (NaN ? 0x7F : detail::round_abs_to_minifloat<3, 7, 0x43E00000,
// 0x7E>(|f| bits)); that template still serves E5M2 and f16, and is written out
// here for E4M3 so that the reference stays put whatever happens to it (the
// first test below checks the two agree today).

namespace old_e4m3 {

constexpr std::int32_t f32_bits_of(std::int32_t n, int p) {
  int msb = 0;
  while ((n >> (msb + 1)) != 0) ++msb;
  return ((p + msb + 127) << 23) | ((n << (23 - msb)) & 0x007FFFFF);
}

// Normal results: keep 3 mantissa bits, rebias 127 -> 7, round up when the
// dropped bits exceed half or equal half with the kept part odd.
inline std::int32_t round_normal(std::int32_t abs) {
  const std::int32_t kept = (abs >> 20) - (120 << 3);
  const std::int32_t rem = abs & 0xFFFFF;
  return kept + static_cast<std::int32_t>(rem + (kept & 1) > 0x80000);
}

// Subnormal results: the number of rounding thresholds at or below |f|. The
// midpoint between codes k and k+1 is (2k + 1) * 2^-10; a tie goes to the even
// code, so the threshold is the midpoint for odd k and the next f32 for even k.
template <int kStep>
inline constexpr std::int32_t kThreshold = f32_bits_of(2 * kStep + 1, -10) + ((kStep & 1) ? 0 : 1);

template <int... kSteps>
inline std::int32_t round_subnormal(std::int32_t abs, std::integer_sequence<int, kSteps...>) {
  return (static_cast<std::int32_t>(abs >= kThreshold<kSteps>) + ... + 0);
}

inline std::uint32_t code(std::uint32_t u) {
  const auto abs = static_cast<std::int32_t>(u & 0x7FFFFFFFu);
  const std::uint32_t sign = (u >> 24) & 0x80u;
  const std::int32_t subnormal = round_subnormal(abs, std::make_integer_sequence<int, 8>{});
  const std::int32_t rounded = abs < 0x3C800000 ? subnormal : round_normal(abs);
  const auto mag = static_cast<std::uint32_t>(abs >= 0x43E00000 ? 0x7E : rounded);
  return sign | (abs > 0x7F800000 ? 0x7Fu : mag);
}

}  // namespace old_e4m3

// Unoptimised builds (Debug, -O0) would take many minutes over 2^32 patterns:
// there the two big tests check every kSampleStride-th chunk or row only (which
// still reaches every f32 exponent); optimised builds check everything.
#ifdef __OPTIMIZE__
constexpr std::uint64_t kSampleStride = 1;
#else
constexpr std::uint64_t kSampleStride = 61;
#endif

unsigned test_threads() { return std::max(1u, std::min(8u, std::thread::hardware_concurrency())); }

// Runs body(t, begin, end) for t < test_threads(), splitting [0, n) among them.
template <class Body>
void parallel_ranges(std::uint64_t n, Body body) {
  const unsigned threads = test_threads();
  std::vector<std::thread> pool;
  for (unsigned t = 0; t < threads; ++t) {
    pool.emplace_back(body, t, n * t / threads, n * (t + 1) / threads);
  }
  for (auto& th : pool) th.join();
}

TEST(Fp8Exhaustive, PreviousFormulationIsTheGenericMinifloatRounding) {
  auto generic = [](std::uint32_t u) {
    const auto abs = static_cast<std::int32_t>(u & 0x7FFFFFFFu);
    const std::uint32_t mag = detail::round_abs_to_minifloat<3, 7, 0x43E00000, 0x7E>(abs);
    return ((u >> 24) & 0x80u) | (abs > 0x7F800000 ? 0x7Fu : mag);
  };
  // Every pattern from 2^-11 to 2^-5 (subnormal results and the first normal
  // binade), and a sweep over all bits at a prime stride.
  std::uint32_t differ = 0;
  for (std::uint32_t u = 0x3A000000; u < 0x3D000000; u += kSampleStride) {
    differ |= generic(u) ^ old_e4m3::code(u);
  }
  ASSERT_EQ(differ, 0u);
  for (std::uint64_t u = 0; u < (std::uint64_t{1} << 32); u += 16411) {
    const auto v = static_cast<std::uint32_t>(u);
    ASSERT_EQ(generic(v), old_e4m3::code(v)) << std::hex << v;
  }
}

// Whether float_to_e4m3 and the previous formulation differ anywhere on the
// 2^16 patterns from base. Branch-free and 32 bits wide, so that it vectorises;
// on x86-64 also compiled for AVX2 (twice the lanes), picked at run time.
std::uint32_t chunk_differs(std::uint32_t base) {
  std::uint32_t differ = 0;
  for (std::uint32_t i = 0; i < (1u << 16); ++i) {
    const std::uint32_t u = base + i;
    differ |= std::uint32_t{float_to_e4m3(bits_float(u))} ^ old_e4m3::code(u);
  }
  return differ;
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__AVX2__)
__attribute__((target("avx2"))) std::uint32_t chunk_differs_avx2(std::uint32_t base) {
  std::uint32_t differ = 0;
  for (std::uint32_t i = 0; i < (1u << 16); ++i) {
    const std::uint32_t u = base + i;
    differ |= std::uint32_t{float_to_e4m3(bits_float(u))} ^ old_e4m3::code(u);
  }
  return differ;
}

using ChunkFn = std::uint32_t (*)(std::uint32_t);
ChunkFn pick_chunk_differs() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") ? chunk_differs_avx2 : chunk_differs;
}
#else
using ChunkFn = std::uint32_t (*)(std::uint32_t);
ChunkFn pick_chunk_differs() { return chunk_differs; }
#endif

TEST(Fp8Exhaustive, E4m3EncoderMatchesPreviousFormulationOnAll2To32Patterns) {
  constexpr std::uint64_t kChunks = std::uint64_t{1} << 16;  // of 2^16 patterns each
  const ChunkFn differs = pick_chunk_differs();
  std::vector<std::uint64_t> bad_chunks(test_threads(), 0);
  std::vector<std::uint32_t> first_bad(test_threads(), 0);
  parallel_ranges(kChunks, [&](unsigned slot, std::uint64_t begin, std::uint64_t end) {
    for (std::uint64_t c = begin; c < end; ++c) {
      if (c % kSampleStride != 0) continue;
      const auto base = static_cast<std::uint32_t>(c << 16);
      if (differs(base) == 0) continue;
      if (bad_chunks[slot]++ != 0) continue;
      for (std::uint32_t i = 0; i < (1u << 16); ++i) {
        if (float_to_e4m3(bits_float(base + i)) != old_e4m3::code(base + i)) {
          first_bad[slot] = base + i;
          break;
        }
      }
    }
  });
  for (std::size_t t = 0; t < bad_chunks.size(); ++t) {
    EXPECT_EQ(bad_chunks[t], 0u) << "first mismatch at f32 bits 0x" << std::hex << first_bad[t]
                                 << ": new 0x" << int{float_to_e4m3(bits_float(first_bad[t]))}
                                 << ", previous 0x" << old_e4m3::code(first_bad[t]);
  }
}

// Every f32 pattern with |x| <= 448 (both signs) and every NaN, 127 to a block
// after an element 448, through quantize_row_fp8; rows alternate between the
// two modes. The block amax is 448, so the scale must be fp8_block_scale(448)
// and every code fp8_quantize(x, fp8_quant_multiplier(448)), the multiplier
// being 1 in both modes.
TEST(Fp8Exhaustive, QuantizeLoopMatchesElementFunctionsForEveryValueUpTo448AndEveryNan) {
  constexpr std::uint32_t k448 = 0x43E00000;
  constexpr std::uint64_t kFinite = std::uint64_t{k448} + 1;  // 0 .. 0x43E00000
  constexpr std::uint64_t kNan = 0x7FFFFFFFu - 0x7F800000u;   // 0x7F800001 .. 0x7FFFFFFF
  constexpr std::uint64_t kPerSign = kFinite + kNan;
  constexpr std::uint64_t kTotal = 2 * kPerSign;
  constexpr int kPerBlock = kFp8BlockSize - 1;
  constexpr std::int64_t kBlocksPerRow = 64;
  constexpr std::uint64_t kPerRow = kPerBlock * kBlocksPerRow;
  constexpr std::int64_t kHidden = kBlocksPerRow * kFp8BlockSize;
  const std::uint64_t rows = (kTotal + kPerRow - 1) / kPerRow;

  std::vector<std::uint64_t> bad_rows(test_threads(), 0);
  std::vector<std::uint64_t> first_bad_row(test_threads(), 0);
  parallel_ranges(rows, [&](unsigned slot, std::uint64_t begin, std::uint64_t end) {
    std::vector<float> x(kHidden);
    std::vector<std::uint8_t> q(kHidden);
    std::vector<float> scales(kBlocksPerRow);
    for (std::uint64_t r = begin; r < end; ++r) {
      if (r % kSampleStride != 0) continue;
      const bool ue8m0 = (r & 1) != 0;
      std::uint64_t n = r * kPerRow;
      for (std::int64_t b = 0; b < kBlocksPerRow; ++b) {
        float* xb = x.data() + b * kFp8BlockSize;
        xb[0] = 448.0f;
        for (int i = 1; i < kFp8BlockSize; ++i, ++n) {
          const std::uint64_t j = n % kPerSign;
          const std::uint32_t sign = n >= kPerSign ? 0x80000000u : 0u;
          const auto mag = static_cast<std::uint32_t>(j < kFinite ? j : j - kFinite + 0x7F800001u);
          xb[i] = n < kTotal ? bits_float(sign | mag) : 0.0f;
        }
      }
      quantize_row_fp8(x.data(), DType::f32, kHidden, q.data(), scales.data(), ue8m0);
      const float scale = fp8_block_scale(448.0f, ue8m0);
      const float multiplier = fp8_quant_multiplier(448.0f, ue8m0);
      std::uint32_t differ = 0;
      for (std::int64_t i = 0; i < kHidden; ++i) {
        differ |= std::uint32_t{q[i]} ^ std::uint32_t{fp8_quantize(x[i], multiplier)};
      }
      for (std::int64_t b = 0; b < kBlocksPerRow; ++b) {
        differ |= float_bits(scales[b]) ^ float_bits(scale);
      }
      if (differ != 0 && bad_rows[slot]++ == 0) first_bad_row[slot] = r;
    }
  });
  for (std::size_t t = 0; t < bad_rows.size(); ++t) {
    EXPECT_EQ(bad_rows[t], 0u) << "first row with a mismatch: " << first_bad_row[t] << " of "
                               << rows << " (ue8m0 = " << (first_bad_row[t] & 1) << ")";
  }
}

// The element functions one by one, as the CUDA kernel applies them.
void reference_quantize_row(const float* x, std::int64_t hidden, std::uint8_t* q, float* scales,
                            bool ue8m0) {
  for (std::int64_t b = 0; b < hidden / kFp8BlockSize; ++b) {
    std::int32_t amax_bits = 0;
    for (int i = 0; i < kFp8BlockSize; ++i) {
      amax_bits = amax_bits_step(amax_bits, x[b * kFp8BlockSize + i]);
    }
    const float amax = fp8_amax_value(amax_bits);
    scales[b] = fp8_block_scale(amax, ue8m0);
    const float m = fp8_quant_multiplier(amax, ue8m0);
    for (int i = 0; i < kFp8BlockSize; ++i) {
      q[b * kFp8BlockSize + i] = fp8_quantize(x[b * kFp8BlockSize + i], m);
    }
  }
}

// Every bf16 pattern, in blocks with and without NaN and infinity and with
// amaxes from tiny to huge, in sequence and shuffled, both modes.
TEST(Fp8Exhaustive, QuantizeLoopMatchesElementFunctionsForEveryBf16Pattern) {
  std::vector<std::uint16_t> all(1 << 16);
  for (std::uint32_t i = 0; i < all.size(); ++i) all[i] = static_cast<std::uint16_t>(i);
  std::vector<std::uint16_t> shuffled = all;
  std::mt19937 rng(7);
  std::shuffle(shuffled.begin(), shuffled.end(), rng);
  // Rows of 1024 (8 blocks), in three layouts: sequential patterns (blocks of
  // neighbouring values, so every amax range including the NaN and inf blocks),
  // shuffled (mixed blocks), and sequential with their NaNs cleared to +0.
  std::vector<std::uint16_t> no_nan = all;
  for (auto& v : no_nan) {
    if ((v & 0x7FFF) > 0x7F80) v = 0;
  }
  constexpr std::int64_t kHidden = 1024;
  for (const auto* layout : {&all, &shuffled, &no_nan}) {
    for (const bool ue8m0 : {false, true}) {
      const std::int64_t rows = static_cast<std::int64_t>(layout->size()) / kHidden;
      std::vector<std::uint8_t> q(layout->size()), q_ref(layout->size());
      std::vector<float> s(layout->size() / kFp8BlockSize), s_ref(s.size());
      quantize_rows_fp8(layout->data(), DType::bf16, rows, kHidden, q.data(), s.data(), ue8m0);
      std::vector<float> x(layout->size());
      for (std::size_t i = 0; i < x.size(); ++i) x[i] = bf16_to_float((*layout)[i]);
      for (std::int64_t r = 0; r < rows; ++r) {
        reference_quantize_row(x.data() + r * kHidden, kHidden, q_ref.data() + r * kHidden,
                               s_ref.data() + r * (kHidden / kFp8BlockSize), ue8m0);
      }
      for (std::size_t i = 0; i < q.size(); ++i) {
        ASSERT_EQ(q[i], q_ref[i]) << "ue8m0 " << ue8m0 << ", element " << i << ", bf16 bits 0x"
                                  << std::hex << (*layout)[i];
      }
      for (std::size_t b = 0; b < s.size(); ++b) {
        ASSERT_EQ(float_bits(s[b]), float_bits(s_ref[b])) << "ue8m0 " << ue8m0 << ", block " << b;
      }
    }
  }
}

}  // namespace
}  // namespace epx::kernels
