// CUDA per-token 1x128 FP8 quantization: the GPU twin of quantize_rows_fp8
// (kernels/quant.hpp), bit-identical to it because both take their element math
// from kernels/fp8_quant.hpp. Plain C++ header: a .cpp may include it.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <epx/tensor.hpp>

namespace epx::kernels {

struct QuantArgs {
  const void* x = nullptr;  // device memory, [rows, hidden] row-major, f32 or bf16
  DType x_dtype = DType::f32;
  std::int64_t rows = 0;
  std::int64_t hidden = 0;    // a multiple of kFp8BlockSize (128)
  std::uint8_t* q = nullptr;  // device memory, e4m3 [rows, hidden]
  float* scales = nullptr;    // device memory, f32 [rows, hidden / 128]
  bool ue8m0 = false;         // power-of-two scales
};

// Enqueues the kernel on `stream` (asynchronous; no synchronisation). Throws
// epx::Error(InvalidArgument) for bad arguments, Internal if the launch fails.
void quantize_rows_fp8_cuda(const QuantArgs& args, cudaStream_t stream);

}  // namespace epx::kernels
