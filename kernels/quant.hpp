// Internal CPU loops for FP8 quantization and dtype conversion, used by the
// public kernels (kernels/cast.cpp) and by comm's dispatch, which casts each
// token once before copying its rows to the peers. Element math comes
// from float_convert.hpp / fp8_quant.hpp, so the CUDA kernels match bit for bit.
//
// All functions throw epx::Error(InvalidArgument) for a dtype they do not take
// or a hidden size that is not a multiple of kFp8BlockSize.
#pragma once

#include <cstdint>
#include <epx/tensor.hpp>

#include "kernels/fp8_quant.hpp"

namespace epx::kernels {

// x: [rows, hidden] row-major, f32 or bf16; hidden % 128 == 0.
// q: e4m3 [rows, hidden]; scales: f32 [rows, hidden / 128].
void quantize_rows_fp8(const void* x, DType x_dtype, std::int64_t rows, std::int64_t hidden,
                       std::uint8_t* q, float* scales, bool ue8m0);

// One row of quantize_rows_fp8; no allocation, so it can write into remote memory.
void quantize_row_fp8(const void* x_row, DType x_dtype, std::int64_t hidden, std::uint8_t* q_row,
                      float* scales_row, bool ue8m0);

// out[r, i] = e4m3_to_float(q[r, i]) * scales[r, i / 128], stored as f32 or bf16 (RNE).
void dequantize_rows_fp8(const std::uint8_t* q, const float* scales, std::int64_t rows,
                         std::int64_t hidden, void* out, DType out_dtype);

// Whether convert() takes this dtype: f32, bf16, f16, e4m3 or e5m2.
bool is_float_dtype(DType dtype);

// n elements from src to dst, each among f32, bf16, f16, e4m3, e5m2. Every value
// is decoded exactly to f32 and rounded once to the target (RNE, saturating as
// float_convert.hpp says). Same dtype: a plain copy.
void convert(const void* src, DType src_dtype, void* dst, DType dst_dtype, std::int64_t n);

}  // namespace epx::kernels
