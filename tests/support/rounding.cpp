#include "tests/support/rounding.hpp"

#include <cstring>
#include <epx/kernels.hpp>

namespace epx::test {

Tensor round_to(const Tensor& f32, DType dtype) {
  return dtype == DType::f32 ? f32.clone() : kernels::cast(f32, dtype);
}

void round_in_place(float* values, std::int64_t n, DType dtype) {
  if (dtype == DType::f32 || n == 0) return;
  Tensor f = Tensor::wrap(values, {n}, DType::f32);
  Tensor back = kernels::cast(kernels::cast(f, dtype), DType::f32);
  std::memcpy(values, back.raw(), static_cast<std::size_t>(n) * sizeof(float));
}

Tensor as_f32(const Tensor& t) {
  return t.dtype() == DType::f32 ? t.clone() : kernels::cast(t, DType::f32);
}

}  // namespace epx::test
