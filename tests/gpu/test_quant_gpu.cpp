// The CUDA FP8 quantization kernel against the CPU loop (quantize_rows_fp8):
// bytes and scales must be identical. Skips (reported as skipped) when no CUDA
// device is visible; scripts/run_gpu_tests.sh treats such a skip as a failure.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <epx/error.hpp>
#include <limits>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "kernels/cuda/quant.cuh"
#include "kernels/quant.hpp"

namespace epx::kernels {
namespace {

#define EPX_CUDA_ASSERT(call)                                                          \
  do {                                                                                 \
    const cudaError_t epx_err_ = (call);                                               \
    ASSERT_EQ(epx_err_, cudaSuccess) << #call << ": " << cudaGetErrorString(epx_err_); \
  } while (0)

// Empty when a device is usable, else why not.
std::string missing_device_reason() {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();  // clear it
    return std::string("cudaGetDeviceCount failed: ") + cudaGetErrorName(err) + " (" +
           cudaGetErrorString(err) + ")";
  }
  if (count == 0) return "cudaGetDeviceCount reports 0 devices";
  return "";
}

class DeviceBuffer {
 public:
  explicit DeviceBuffer(std::size_t bytes) {
    if (bytes && cudaMalloc(&ptr_, bytes) != cudaSuccess) ptr_ = nullptr;
  }
  ~DeviceBuffer() {
    if (ptr_) cudaFree(ptr_);
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  void* get() const { return ptr_; }

 private:
  void* ptr_ = nullptr;
};

// Random rows with the hard cases mixed in: values across 2^-40 .. 2^40, an
// all-zero block, NaN, infinity, a huge value, signed zeros, E4M3-tie inputs.
std::vector<float> make_rows(std::int64_t rows, std::int64_t hidden, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int> exp(-40, 40), pick(0, 99);
  std::vector<float> x(static_cast<std::size_t>(rows * hidden));
  for (std::int64_t r = 0; r < rows; ++r) {
    const bool wide = r % 2 == 1;
    const int row_exp = exp(rng) / 2;
    for (std::int64_t i = 0; i < hidden; ++i) {
      float v = std::ldexp(normal(rng), wide ? exp(rng) : row_exp);
      const int p = pick(rng);
      if (p == 0) v = -0.0f;
      if (p == 1) v = 0.0f;
      x[r * hidden + i] = v;
    }
  }
  const auto at = [&](std::int64_t r, std::int64_t i) -> float& {
    return x[(r % rows) * hidden + i];
  };
  for (int i = 0; i < 128; ++i) at(0, i) = 0.0f;  // all-zero block: scale from the 1e-4 floor
  at(1, 3) = std::numeric_limits<float>::quiet_NaN();
  at(1, 4) = -std::numeric_limits<float>::quiet_NaN();
  at(2, 5) = std::numeric_limits<float>::infinity();
  at(2, 6) = -std::numeric_limits<float>::infinity();
  at(3, 7) = 3e38f;
  // A block with amax 448, so the multiplier is 1 and E4M3 ties reach the encoder
  // as they are: 432 (between 416 and 448), 2^-10 (between 0 and 2^-9), 3 * 2^-10.
  for (int i = 0; i < 128; ++i) at(4, i) = normal(rng);
  at(4, 8) = 448.0f;
  at(4, 9) = 432.0f;
  at(4, 10) = std::ldexp(1.0f, -10);
  at(4, 11) = -std::ldexp(3.0f, -10);
  return x;
}

void expect_gpu_matches_cpu(const void* x, DType dtype, std::int64_t rows, std::int64_t hidden,
                            bool ue8m0) {
  const std::size_t n = static_cast<std::size_t>(rows * hidden);
  const std::size_t nblocks = n / kFp8BlockSize;
  std::vector<std::uint8_t> want_q(n);
  std::vector<float> want_s(nblocks);
  quantize_rows_fp8(x, dtype, rows, hidden, want_q.data(), want_s.data(), ue8m0);

  const std::size_t x_bytes = n * dtype_size(dtype);
  DeviceBuffer dx(x_bytes), dq(n), ds(nblocks * sizeof(float));
  ASSERT_TRUE(dx.get() && dq.get() && ds.get()) << "cudaMalloc failed";
  EPX_CUDA_ASSERT(cudaMemcpy(dx.get(), x, x_bytes, cudaMemcpyHostToDevice));
  EPX_CUDA_ASSERT(cudaMemset(dq.get(), 0xAA, n));
  EPX_CUDA_ASSERT(cudaMemset(ds.get(), 0xFF, nblocks * sizeof(float)));
  cudaStream_t stream = nullptr;
  EPX_CUDA_ASSERT(cudaStreamCreate(&stream));
  QuantArgs args;
  args.x = dx.get();
  args.x_dtype = dtype;
  args.rows = rows;
  args.hidden = hidden;
  args.q = static_cast<std::uint8_t*>(dq.get());
  args.scales = static_cast<float*>(ds.get());
  args.ue8m0 = ue8m0;
  quantize_rows_fp8_cuda(args, stream);
  const cudaError_t sync = cudaStreamSynchronize(stream);
  cudaStreamDestroy(stream);
  EPX_CUDA_ASSERT(sync);

  std::vector<std::uint8_t> got_q(n);
  std::vector<float> got_s(nblocks);
  EPX_CUDA_ASSERT(cudaMemcpy(got_q.data(), dq.get(), n, cudaMemcpyDeviceToHost));
  EPX_CUDA_ASSERT(
      cudaMemcpy(got_s.data(), ds.get(), nblocks * sizeof(float), cudaMemcpyDeviceToHost));
  for (std::size_t b = 0; b < nblocks; ++b) {
    std::uint32_t g, w;
    std::memcpy(&g, &got_s[b], 4);
    std::memcpy(&w, &want_s[b], 4);
    ASSERT_EQ(g, w) << "scale of block " << b << ": gpu " << got_s[b] << ", cpu " << want_s[b];
  }
  for (std::size_t i = 0; i < n; ++i) {
    ASSERT_EQ(int{got_q[i]}, int{want_q[i]}) << "element " << i << " (row " << i / hidden << ")";
  }
}

using GpuCase = std::tuple<std::int64_t /*rows*/, std::int64_t /*hidden*/, DType, bool /*ue8m0*/>;

class QuantGpu : public testing::TestWithParam<GpuCase> {
 protected:
  void SetUp() override {
    const std::string why = missing_device_reason();
    if (!why.empty()) GTEST_SKIP() << "no CUDA device: " << why;
  }
};

TEST_P(QuantGpu, MatchesCpuBitExact) {
  const auto& [rows, hidden, dtype, ue8m0] = GetParam();
  const std::vector<float> x = make_rows(rows, hidden, static_cast<std::uint32_t>(rows + hidden));
  if (dtype == DType::f32) {
    expect_gpu_matches_cpu(x.data(), dtype, rows, hidden, ue8m0);
  } else {
    std::vector<std::uint16_t> xb(x.size());
    for (std::size_t i = 0; i < x.size(); ++i) xb[i] = float_to_bf16(x[i]);
    expect_gpu_matches_cpu(xb.data(), dtype, rows, hidden, ue8m0);
  }
}

std::string gpu_case_name(const testing::TestParamInfo<GpuCase>& info) {
  const auto& [rows, hidden, dtype, ue8m0] = info.param;
  return "r" + std::to_string(rows) + "_h" + std::to_string(hidden) + "_" + dtype_name(dtype) +
         (ue8m0 ? "_ue8m0" : "_f32scale");
}

// Rows 5 with hidden 128: 5 blocks, a partly filled thread block; 1000 x 4096:
// many thread blocks.
INSTANTIATE_TEST_SUITE_P(Shapes, QuantGpu,
                         testing::Combine(testing::Values<std::int64_t>(5, 64),
                                          testing::Values<std::int64_t>(128, 256, 7168),
                                          testing::Values(DType::f32, DType::bf16),
                                          testing::Bool()),
                         gpu_case_name);
INSTANTIATE_TEST_SUITE_P(Large, QuantGpu,
                         testing::Combine(testing::Values<std::int64_t>(1000),
                                          testing::Values<std::int64_t>(4096),
                                          testing::Values(DType::f32, DType::bf16),
                                          testing::Bool()),
                         gpu_case_name);

// The launcher checks its arguments before touching the device.
TEST(QuantGpuArgs, RejectsBadHiddenAndDtype) {
  QuantArgs args;
  args.rows = 2;
  args.hidden = 100;
  try {
    quantize_rows_fp8_cuda(args, nullptr);
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::InvalidArgument);
    EXPECT_NE(std::string(e.what()).find("128"), std::string::npos) << e.what();
  }
  args.hidden = 128;
  args.x_dtype = DType::f16;
  EXPECT_THROW(quantize_rows_fp8_cuda(args, nullptr), Error);
}

}  // namespace
}  // namespace epx::kernels
