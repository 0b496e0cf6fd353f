// CPU loops over the shared element math. Inner loops are branch-free over a
// typed pointer so that the compiler can vectorise them; dtype dispatch happens
// once per row (or per chunk), never per element.
#include "kernels/quant.hpp"

#include <array>
#include <cstring>

#include "core/check.hpp"

namespace epx::kernels {
namespace {

inline float to_float(float v) { return v; }
inline float to_float(std::uint16_t bf16) { return bf16_to_float(bf16); }

void check_hidden(const char* fn, std::int64_t hidden) {
  EPX_CHECK(hidden >= 0 && hidden % kFp8BlockSize == 0, InvalidArgument, fn, ": hidden = ", hidden,
            ", expected a non-negative multiple of ", kFp8BlockSize, " (the FP8 block size)");
}

void check_row_dtype(const char* fn, const char* arg, DType dtype) {
  EPX_CHECK(dtype == DType::f32 || dtype == DType::bf16, InvalidArgument, fn, ": ", arg, " = ",
            dtype_name(dtype), ", expected f32 or bf16");
}

void check_count(const char* fn, const char* arg, std::int64_t n) {
  EPX_CHECK(n >= 0, InvalidArgument, fn, ": ", arg, " = ", n, ", expected >= 0");
}

// ---- quantization ----
//
// Per 128-channel block: an amax pass, the scale, an encode pass into a 32-bit
// stack buffer and a narrowing pass into q. Every value is what the element
// functions of fp8_quant.hpp give (the CUDA kernel runs the same ones):
//  - block_amax_bits returns what amax_bits_step folded over the block returns
//    (see there for why any order of the max is the same);
//  - the encode pass is fp8_quantize_code per element. It stays 32 bits wide
//    into the buffer: fed straight into a byte store, GCC narrows every
//    intermediate lane to bytes with packs and masks, several times slower.
// The loops are written to vectorise (no branches, no per-lane variable
// shifts) and are compiled twice on x86-64: for the baseline ISA and for AVX2,
// picked once per process by what the CPU supports. Both are the same C++ and
// integer or IEEE f32 operations only, so they give the same bits.

// The amax_bits_step fold itself, for blocks that hold a NaN (out of line, so
// that the fast loops below keep their registers).
template <class T>
__attribute__((noinline, cold)) std::int32_t block_amax_bits_with_nan(const T* x) {
  std::int32_t acc = 0;
  for (int i = 0; i < kFp8BlockSize; ++i) acc = amax_bits_step(acc, to_float(x[i]));
  return acc;
}

// Block amax, f32 input. The plain max of the |x| bits equals the
// NaN-skipping amax_bits_step fold whenever it is not itself a NaN pattern
// (then no element was NaN); only a block with a NaN runs the fold.
inline std::int32_t block_amax_bits(const float* x) {
  std::int32_t m = 0;
  for (int i = 0; i < kFp8BlockSize; ++i) {
    const auto a = static_cast<std::int32_t>(float_bits(x[i]) & detail::kF32AbsMask);
    m = a > m ? a : m;
  }
  return m <= detail::kF32InfBits ? m : block_amax_bits_with_nan(x);
}

// Block amax, bf16 input: the f32 bits of |x| are (bits & 0x7FFF) << 16, an
// order-preserving map, so the max can be taken on the 16-bit values (twice the
// lanes per vector) and shifted. 0x7F80 is bf16 infinity; above it, NaN.
inline std::int32_t block_amax_bits(const std::uint16_t* x) {
  std::int16_t m = 0;
  for (int i = 0; i < kFp8BlockSize; ++i) {
    const auto a = static_cast<std::int16_t>(x[i] & 0x7FFF);
    m = a > m ? a : m;
  }
  return m <= 0x7F80 ? static_cast<std::int32_t>(m) << 16 : block_amax_bits_with_nan(x);
}

// One row, arguments already checked.
template <class T>
__attribute__((always_inline)) inline void quantize_row_loops(const T* x, std::int64_t hidden,
                                                              std::uint8_t* q, float* scales,
                                                              bool ue8m0) {
  for (std::int64_t b = 0; b < hidden / kFp8BlockSize; ++b) {
    const T* xb = x + b * kFp8BlockSize;
    std::uint8_t* qb = q + b * kFp8BlockSize;
    const float amax = fp8_amax_value(block_amax_bits(xb));
    scales[b] = fp8_block_scale(amax, ue8m0);
    const float multiplier = fp8_quant_multiplier(amax, ue8m0);
    std::uint32_t codes[kFp8BlockSize];
    for (int i = 0; i < kFp8BlockSize; ++i) {
      codes[i] = fp8_quantize_code(to_float(xb[i]), multiplier);
    }
    for (int i = 0; i < kFp8BlockSize; ++i) qb[i] = static_cast<std::uint8_t>(codes[i]);
  }
}

using QuantizeRowF32 = void (*)(const float*, std::int64_t, std::uint8_t*, float*, bool);
using QuantizeRowBf16 = void (*)(const std::uint16_t*, std::int64_t, std::uint8_t*, float*, bool);

void quantize_row_f32(const float* x, std::int64_t hidden, std::uint8_t* q, float* scales,
                      bool ue8m0) {
  quantize_row_loops(x, hidden, q, scales, ue8m0);
}

void quantize_row_bf16(const std::uint16_t* x, std::int64_t hidden, std::uint8_t* q, float* scales,
                       bool ue8m0) {
  quantize_row_loops(x, hidden, q, scales, ue8m0);
}

// AVX2 copies where the build targets an x86-64 without it (the usual case).
// Only "avx2", not "fma": the loops have nothing to fuse, and must not.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__AVX2__)
#define EPX_QUANT_AVX2_CLONES 1

__attribute__((target("avx2"))) void quantize_row_f32_avx2(const float* x, std::int64_t hidden,
                                                           std::uint8_t* q, float* scales,
                                                           bool ue8m0) {
  quantize_row_loops(x, hidden, q, scales, ue8m0);
}

__attribute__((target("avx2"))) void quantize_row_bf16_avx2(const std::uint16_t* x,
                                                            std::int64_t hidden, std::uint8_t* q,
                                                            float* scales, bool ue8m0) {
  quantize_row_loops(x, hidden, q, scales, ue8m0);
}

bool cpu_has_avx2() {
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") != 0;
  }();
  return has;
}
#endif

void quantize_row_unchecked(const void* x, DType x_dtype, std::int64_t hidden, std::uint8_t* q,
                            float* scales, bool ue8m0) {
  QuantizeRowF32 f32 = quantize_row_f32;
  QuantizeRowBf16 bf16 = quantize_row_bf16;
#ifdef EPX_QUANT_AVX2_CLONES
  if (cpu_has_avx2()) {
    f32 = quantize_row_f32_avx2;
    bf16 = quantize_row_bf16_avx2;
  }
#endif
  if (x_dtype == DType::f32) {
    f32(static_cast<const float*>(x), hidden, q, scales, ue8m0);
  } else {
    bf16(static_cast<const std::uint16_t*>(x), hidden, q, scales, ue8m0);
  }
}

// Decoding all 256 codes of an FP8 format once makes decoding a table lookup.
template <float (*kDecode)(std::uint8_t)>
const std::array<float, 256>& fp8_table() {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> t{};
    for (int c = 0; c < 256; ++c) t[c] = kDecode(static_cast<std::uint8_t>(c));
    return t;
  }();
  return table;
}

const std::array<float, 256>& e4m3_table() { return fp8_table<e4m3_to_float>(); }
const std::array<float, 256>& e5m2_table() { return fp8_table<e5m2_to_float>(); }

// convert() goes through f32 in chunks: decode up to kChunk elements into a stack
// buffer, then encode them. Decoding is exact, so this rounds once.
constexpr std::int64_t kChunk = 1024;

void decode_chunk(const void* src, DType dtype, std::int64_t begin, std::int64_t n, float* out) {
  switch (dtype) {
    case DType::f32: {
      std::memcpy(out, static_cast<const float*>(src) + begin, n * sizeof(float));
      return;
    }
    case DType::bf16: {
      const auto* p = static_cast<const std::uint16_t*>(src) + begin;
      for (std::int64_t i = 0; i < n; ++i) out[i] = bf16_to_float(p[i]);
      return;
    }
    case DType::f16: {
      const auto* p = static_cast<const std::uint16_t*>(src) + begin;
      for (std::int64_t i = 0; i < n; ++i) out[i] = f16_to_float(p[i]);
      return;
    }
    case DType::e4m3: {
      const auto& table = e4m3_table();
      const auto* p = static_cast<const std::uint8_t*>(src) + begin;
      for (std::int64_t i = 0; i < n; ++i) out[i] = table[p[i]];
      return;
    }
    case DType::e5m2: {
      const auto& table = e5m2_table();
      const auto* p = static_cast<const std::uint8_t*>(src) + begin;
      for (std::int64_t i = 0; i < n; ++i) out[i] = table[p[i]];
      return;
    }
    default:
      break;
  }
  EPX_THROW(Internal, "convert: undecodable dtype ", dtype_name(dtype));  // checked by the caller
}

void encode_chunk(const float* in, std::int64_t n, void* dst, DType dtype, std::int64_t begin) {
  switch (dtype) {
    case DType::f32: {
      std::memcpy(static_cast<float*>(dst) + begin, in, n * sizeof(float));
      return;
    }
    case DType::bf16: {
      auto* p = static_cast<std::uint16_t*>(dst) + begin;
      for (std::int64_t i = 0; i < n; ++i) p[i] = float_to_bf16(in[i]);
      return;
    }
    case DType::f16: {
      auto* p = static_cast<std::uint16_t*>(dst) + begin;
      for (std::int64_t i = 0; i < n; ++i) p[i] = float_to_f16(in[i]);
      return;
    }
    case DType::e4m3: {
      auto* p = static_cast<std::uint8_t*>(dst) + begin;
      for (std::int64_t i = 0; i < n; ++i) p[i] = float_to_e4m3(in[i]);
      return;
    }
    case DType::e5m2: {
      auto* p = static_cast<std::uint8_t*>(dst) + begin;
      for (std::int64_t i = 0; i < n; ++i) p[i] = float_to_e5m2(in[i]);
      return;
    }
    default:
      break;
  }
  EPX_THROW(Internal, "convert: unencodable dtype ", dtype_name(dtype));  // checked by the caller
}

}  // namespace

bool is_float_dtype(DType d) {
  return d == DType::f32 || d == DType::bf16 || d == DType::f16 || d == DType::e4m3 ||
         d == DType::e5m2;
}

void quantize_row_fp8(const void* x_row, DType x_dtype, std::int64_t hidden, std::uint8_t* q_row,
                      float* scales_row, bool ue8m0) {
  check_row_dtype("quantize_row_fp8", "x_dtype", x_dtype);
  check_hidden("quantize_row_fp8", hidden);
  quantize_row_unchecked(x_row, x_dtype, hidden, q_row, scales_row, ue8m0);
}

void quantize_rows_fp8(const void* x, DType x_dtype, std::int64_t rows, std::int64_t hidden,
                       std::uint8_t* q, float* scales, bool ue8m0) {
  check_row_dtype("quantize_rows_fp8", "x_dtype", x_dtype);
  check_hidden("quantize_rows_fp8", hidden);
  check_count("quantize_rows_fp8", "rows", rows);
  const std::int64_t x_row_bytes = hidden * static_cast<std::int64_t>(dtype_size(x_dtype));
  const std::int64_t blocks = hidden / kFp8BlockSize;
  for (std::int64_t r = 0; r < rows; ++r) {
    quantize_row_unchecked(static_cast<const char*>(x) + r * x_row_bytes, x_dtype, hidden,
                           q + r * hidden, scales + r * blocks, ue8m0);
  }
}

void dequantize_rows_fp8(const std::uint8_t* q, const float* scales, std::int64_t rows,
                         std::int64_t hidden, void* out, DType out_dtype) {
  check_row_dtype("dequantize_rows_fp8", "out_dtype", out_dtype);
  check_hidden("dequantize_rows_fp8", hidden);
  check_count("dequantize_rows_fp8", "rows", rows);
  const auto& table = e4m3_table();
  const std::int64_t blocks = hidden / kFp8BlockSize;
  for (std::int64_t r = 0; r < rows; ++r) {
    for (std::int64_t b = 0; b < blocks; ++b) {
      const std::uint8_t* qb = q + r * hidden + b * kFp8BlockSize;
      const float scale = scales[r * blocks + b];
      const std::int64_t offset = r * hidden + b * kFp8BlockSize;
      if (out_dtype == DType::f32) {
        float* ob = static_cast<float*>(out) + offset;
        for (int i = 0; i < kFp8BlockSize; ++i) ob[i] = table[qb[i]] * scale;
      } else {
        std::uint16_t* ob = static_cast<std::uint16_t*>(out) + offset;
        for (int i = 0; i < kFp8BlockSize; ++i) ob[i] = float_to_bf16(table[qb[i]] * scale);
      }
    }
  }
}

void convert(const void* src, DType src_dtype, void* dst, DType dst_dtype, std::int64_t n) {
  EPX_CHECK(is_float_dtype(src_dtype), InvalidArgument,
            "convert: src_dtype = ", dtype_name(src_dtype),
            ", expected one of f32, bf16, f16, e4m3, e5m2");
  EPX_CHECK(is_float_dtype(dst_dtype), InvalidArgument,
            "convert: dst_dtype = ", dtype_name(dst_dtype),
            ", expected one of f32, bf16, f16, e4m3, e5m2");
  check_count("convert", "n", n);
  if (n == 0) return;
  if (src_dtype == dst_dtype) {
    std::memcpy(dst, src, static_cast<std::size_t>(n) * dtype_size(src_dtype));
    return;
  }
  float buf[kChunk];
  for (std::int64_t begin = 0; begin < n; begin += kChunk) {
    const std::int64_t len = n - begin < kChunk ? n - begin : kChunk;
    decode_chunk(src, src_dtype, begin, len, buf);
    encode_chunk(buf, len, dst, dst_dtype, begin);
  }
}

}  // namespace epx::kernels
