// epx::kernels: host entry points for the element kernels that comm uses
// (FP8 casts, per-token 1x128 quantization). Same bits as the CUDA kernels.
#pragma once

#include <utility>

#include <epx/config.hpp>
#include <epx/tensor.hpp>
#include <epx/model_kernels.hpp>  // the model's ops (forward and backward)

namespace epx::kernels {

// Element-wise conversion between f32, bf16, f16, e4m3 and e5m2, rounded
// to nearest even. e4m3, e5m2 and f16 saturate to their largest finite value
// (inf too); bf16 keeps IEEE overflow to inf, like torch. NaN stays NaN.
EPX_API Tensor cast(const Tensor& x, DType to);

// x: f32 or bf16 [T,H], H % 128 == 0. Returns (e4m3 [T,H], f32 scales [T,H/128])
// with the recipe of DESIGN.md: a = max(amax, 1e-4), scale = a/448,
// q = e4m3(x * (448/a)); with ue8m0 scale = 2^ceil(log2(a/448)), q = e4m3(x/scale).
EPX_API std::pair<Tensor, Tensor> per_token_cast_to_fp8(const Tensor& x, bool ue8m0 = false);

// q: e4m3 [T,H], scales: f32 [T,H/128]. Returns float(q) * scale in `out` (f32 or bf16).
EPX_API Tensor per_token_cast_back(const Tensor& q, const Tensor& scales, DType out = DType::f32);

}  // namespace epx::kernels
