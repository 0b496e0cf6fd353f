// Thread mapping for per-token FP8 quantization. The arithmetic lives in
// kernels/fp8_quant.hpp; this file only decides which thread touches what.
//
// One warp per 128-channel block. Since hidden is a multiple of 128, block b of
// row r is flat block r * (hidden / 128) + b, whose elements start at 128 * that
// index and whose scale sits at that index: the kernel sees rows * hidden / 128
// independent blocks. Lane l holds elements l, l + 32, l + 64, l + 96, so every
// load and store instruction of the warp touches consecutive addresses.
#include "core/check.hpp"
#include "kernels/cuda/quant.cuh"
#include "kernels/fp8_quant.hpp"

namespace epx::kernels {
namespace {

constexpr int kWarpSize = 32;
constexpr int kWarpsPerCta = 8;
constexpr int kPerLane = kFp8BlockSize / kWarpSize;
static_assert(kFp8BlockSize % kWarpSize == 0, "a block must split evenly over a warp");

__device__ inline float load_element(const float* x, std::int64_t i) { return x[i]; }
__device__ inline float load_element(const std::uint16_t* x, std::int64_t i) {
  return bf16_to_float(x[i]);
}

template <class T>
__global__ void __launch_bounds__(kWarpsPerCta* kWarpSize)
    quantize_blocks_kernel(const T* __restrict__ x, std::int64_t num_blocks,
                           std::uint8_t* __restrict__ q, float* __restrict__ scales, bool ue8m0) {
  const std::int64_t block =
      static_cast<std::int64_t>(blockIdx.x) * kWarpsPerCta + threadIdx.x / kWarpSize;
  if (block >= num_blocks) return;  // uniform across the warp: the shuffles below stay full
  const int lane = static_cast<int>(threadIdx.x % kWarpSize);
  const std::int64_t base = block * kFp8BlockSize + lane;

  float v[kPerLane];
  std::int32_t amax_bits = 0;
#pragma unroll
  for (int k = 0; k < kPerLane; ++k) {
    v[k] = load_element(x, base + k * kWarpSize);
    amax_bits = amax_bits_step(amax_bits, v[k]);
  }
  // Integer max over the warp: exact and order-independent, like the CPU loop.
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    amax_bits = max(amax_bits, __shfl_xor_sync(0xFFFFFFFFu, amax_bits, offset));
  }
  const float amax = fp8_amax_value(amax_bits);
  if (lane == 0) scales[block] = fp8_block_scale(amax, ue8m0);
  const float multiplier = fp8_quant_multiplier(amax, ue8m0);
#pragma unroll
  for (int k = 0; k < kPerLane; ++k) q[base + k * kWarpSize] = fp8_quantize(v[k], multiplier);
}

}  // namespace

void quantize_rows_fp8_cuda(const QuantArgs& args, cudaStream_t stream) {
  EPX_CHECK(args.x_dtype == DType::f32 || args.x_dtype == DType::bf16, InvalidArgument,
            "quantize_rows_fp8_cuda: x_dtype = ", dtype_name(args.x_dtype),
            ", expected f32 or bf16");
  EPX_CHECK(args.hidden >= 0 && args.hidden % kFp8BlockSize == 0, InvalidArgument,
            "quantize_rows_fp8_cuda: hidden = ", args.hidden,
            ", expected a non-negative multiple of ", kFp8BlockSize, " (the FP8 block size)");
  EPX_CHECK(args.rows >= 0, InvalidArgument, "quantize_rows_fp8_cuda: rows = ", args.rows,
            ", expected >= 0");
  const std::int64_t num_blocks = args.rows * (args.hidden / kFp8BlockSize);
  if (num_blocks == 0) return;
  EPX_CHECK(args.x != nullptr && args.q != nullptr && args.scales != nullptr, InvalidArgument,
            "quantize_rows_fp8_cuda: null pointer among x, q, scales for rows = ", args.rows,
            ", hidden = ", args.hidden);
  const std::int64_t grid = (num_blocks + kWarpsPerCta - 1) / kWarpsPerCta;
  EPX_CHECK(grid <= 0x7FFFFFFF, InvalidArgument,
            "quantize_rows_fp8_cuda: rows * hidden / 128 = ", num_blocks, " needs ", grid,
            " thread blocks, more than a grid holds (2^31 - 1)");

  const dim3 grid_dim(static_cast<unsigned>(grid));
  const dim3 block_dim(kWarpsPerCta * kWarpSize);
  if (args.x_dtype == DType::f32) {
    quantize_blocks_kernel<<<grid_dim, block_dim, 0, stream>>>(
        static_cast<const float*>(args.x), num_blocks, args.q, args.scales, args.ue8m0);
  } else {
    quantize_blocks_kernel<<<grid_dim, block_dim, 0, stream>>>(
        static_cast<const std::uint16_t*>(args.x), num_blocks, args.q, args.scales, args.ue8m0);
  }
  const cudaError_t err = cudaGetLastError();
  EPX_CHECK(err == cudaSuccess, Internal,
            "quantize_rows_fp8_cuda: kernel launch failed: ", cudaGetErrorName(err), " (",
            cudaGetErrorString(err), ")");
}

}  // namespace epx::kernels
