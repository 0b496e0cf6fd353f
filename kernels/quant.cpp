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

// One row, arguments already checked. Per block: amax pass, then quantize pass.
template <class T>
void quantize_row(const T* x, std::int64_t hidden, std::uint8_t* q, float* scales, bool ue8m0) {
  for (std::int64_t b = 0; b < hidden / kFp8BlockSize; ++b) {
    const T* xb = x + b * kFp8BlockSize;
    std::uint8_t* qb = q + b * kFp8BlockSize;
    std::int32_t amax_bits = 0;
    for (int i = 0; i < kFp8BlockSize; ++i) amax_bits = amax_bits_step(amax_bits, to_float(xb[i]));
    const float amax = fp8_amax_value(amax_bits);
    scales[b] = fp8_block_scale(amax, ue8m0);
    const float multiplier = fp8_quant_multiplier(amax, ue8m0);
    for (int i = 0; i < kFp8BlockSize; ++i) qb[i] = fp8_quantize(to_float(xb[i]), multiplier);
  }
}

void quantize_row_unchecked(const void* x, DType x_dtype, std::int64_t hidden, std::uint8_t* q,
                            float* scales, bool ue8m0) {
  if (x_dtype == DType::f32) {
    quantize_row(static_cast<const float*>(x), hidden, q, scales, ue8m0);
  } else {
    quantize_row(static_cast<const std::uint16_t*>(x), hidden, q, scales, ue8m0);
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

void accumulate_row(const void* src, DType dtype, std::int64_t n, float* acc) {
  check_row_dtype("accumulate_row", "dtype", dtype);
  if (dtype == DType::f32) {
    const auto* p = static_cast<const float*>(src);
    for (std::int64_t i = 0; i < n; ++i) acc[i] += p[i];
  } else {
    const auto* p = static_cast<const std::uint16_t*>(src);
    for (std::int64_t i = 0; i < n; ++i) acc[i] += bf16_to_float(p[i]);
  }
}

void store_row(const float* acc, std::int64_t n, void* dst, DType dtype) {
  check_row_dtype("store_row", "dtype", dtype);
  if (n <= 0) return;
  if (dtype == DType::f32) {
    std::memcpy(dst, acc, static_cast<std::size_t>(n) * sizeof(float));
  } else {
    auto* p = static_cast<std::uint16_t*>(dst);
    for (std::int64_t i = 0; i < n; ++i) p[i] = float_to_bf16(acc[i]);
  }
}

}  // namespace epx::kernels
