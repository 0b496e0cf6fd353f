// f32 values rounded to a result dtype through the library's cast kernel
// (round to nearest even; it has its own tests), as a reference must round
// what the tested code rounds.
#pragma once

#include <cstdint>
#include <epx/tensor.hpp>

namespace epx::test {

// A copy of f32 values rounded to `dtype` (f32: an unchanged copy).
Tensor round_to(const Tensor& f32, DType dtype);

// n f32 values rounded to `dtype` and back to f32, in place.
void round_in_place(float* values, std::int64_t n, DType dtype);

// Any float tensor's values as f32 (a copy).
Tensor as_f32(const Tensor& t);

}  // namespace epx::test
