// The public host kernels of include/epx/kernels.hpp: argument checks, output
// allocation, then the loops of kernels/quant.cpp.
#include <epx/kernels.hpp>

#include "core/check.hpp"
#include "kernels/quant.hpp"

namespace epx::kernels {
namespace {

constexpr const char* kFloatDtypes = "one of f32, bf16, f16, e4m3, e5m2";

// These functions read and write host memory only.
void check_host_tensor(const char* fn, const char* arg, const Tensor& t) {
  EPX_CHECK(t.defined(), InvalidArgument, fn, ": ", arg, " is an undefined tensor");
  EPX_CHECK(t.device() == Device::cpu, InvalidArgument, fn, ": ", arg, " = ", t.describe(),
            ": device ", device_name(t.device()), ", expected a cpu tensor (host kernels)");
}

void check_matrix(const char* fn, const char* arg, const Tensor& t) {
  EPX_CHECK(t.ndim() == 2, InvalidArgument, fn, ": ", arg, " = ", t.describe(), " has ", t.ndim(),
            " dimensions, expected 2 ([tokens, hidden])");
}

void check_hidden(const char* fn, const char* arg, const Tensor& t) {
  const std::int64_t hidden = t.dim(1);
  EPX_CHECK(hidden % kFp8BlockSize == 0, InvalidArgument, fn, ": ", arg, " = ", t.describe(),
            ": hidden (dim 1) = ", hidden, ", expected a multiple of ", kFp8BlockSize,
            " (the FP8 block size)");
}

}  // namespace

Tensor cast(const Tensor& x, DType to) {
  check_host_tensor("cast", "x", x);
  EPX_CHECK(is_float_dtype(x.dtype()), InvalidArgument, "cast: x = ", x.describe(),
            ", expected dtype ", kFloatDtypes);
  EPX_CHECK(is_float_dtype(to), InvalidArgument, "cast: to = ", dtype_name(to), ", expected ",
            kFloatDtypes);
  Tensor out = Tensor::empty(x.shape(), to);
  convert(x.raw(), x.dtype(), out.raw(), to, x.numel());
  return out;
}

std::pair<Tensor, Tensor> per_token_cast_to_fp8(const Tensor& x, bool ue8m0) {
  constexpr const char* kFn = "per_token_cast_to_fp8";
  check_host_tensor(kFn, "x", x);
  EPX_CHECK(x.dtype() == DType::f32 || x.dtype() == DType::bf16, InvalidArgument, kFn,
            ": x = ", x.describe(), ", expected dtype f32 or bf16");
  check_matrix(kFn, "x", x);
  check_hidden(kFn, "x", x);
  const std::int64_t tokens = x.dim(0);
  const std::int64_t hidden = x.dim(1);
  Tensor q = Tensor::empty({tokens, hidden}, DType::e4m3);
  Tensor scales = Tensor::empty({tokens, hidden / kFp8BlockSize}, DType::f32);
  quantize_rows_fp8(x.raw(), x.dtype(), tokens, hidden, q.data<std::uint8_t>(),
                    scales.data<float>(), ue8m0);
  return {std::move(q), std::move(scales)};
}

Tensor per_token_cast_back(const Tensor& q, const Tensor& scales, DType out) {
  constexpr const char* kFn = "per_token_cast_back";
  check_host_tensor(kFn, "q", q);
  check_host_tensor(kFn, "scales", scales);
  EPX_CHECK(q.dtype() == DType::e4m3, InvalidArgument, kFn, ": q = ", q.describe(),
            ", expected dtype e4m3");
  EPX_CHECK(scales.dtype() == DType::f32, InvalidArgument, kFn, ": scales = ", scales.describe(),
            ", expected dtype f32");
  EPX_CHECK(out == DType::f32 || out == DType::bf16, InvalidArgument, kFn,
            ": out = ", dtype_name(out), ", expected f32 or bf16");
  check_matrix(kFn, "q", q);
  check_matrix(kFn, "scales", scales);
  check_hidden(kFn, "q", q);
  const std::int64_t tokens = q.dim(0);
  const std::int64_t hidden = q.dim(1);
  EPX_CHECK(scales.dim(0) == tokens && scales.dim(1) == hidden / kFp8BlockSize, InvalidArgument,
            kFn, ": scales = ", scales.describe(), ", expected shape [", tokens, ",",
            hidden / kFp8BlockSize, "] for q = ", q.describe());
  Tensor result = Tensor::empty({tokens, hidden}, out);
  dequantize_rows_fp8(q.data<std::uint8_t>(), scales.data<float>(), tokens, hidden, result.raw(),
                      out);
  return result;
}

}  // namespace epx::kernels
