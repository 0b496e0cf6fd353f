// The normal combine's reference for the combine and inter-node suites: the
// test-support library's, with world()'s node layout and the y that
// make_expert_outputs computes.
#pragma once

#include "comm_fixture.hpp"
#include "tests/support/combine_reference.hpp"

namespace epx::test {

// y on this rank: expert_output() of every received row (x already f32).
inline Tensor make_expert_outputs(const Tensor& recv_x_f32, DType ydtype) {
  const std::int64_t M = recv_x_f32.dim(0), H = recv_x_f32.dim(1);
  Tensor y = Tensor::empty({M, H}, DType::f32);
  const float* x = recv_x_f32.data<float>();
  for (std::int64_t i = 0; i < M * H; ++i) y.data<float>()[i] = expert_output(x[i], world().rank(), i % H);
  return round_to(y, ydtype);
}

// What combine must return on rank `me` (node by node, then rank by rank:
// tests/support/combine_reference.hpp), the received rows being this rank's
// make_inputs rows, as dispatch without FP8 delivers them.
inline Tensor expected_combine(const Shape& s, int me, DType ydtype, bool partials_in_input_dtype = false) {
  const Tensor xf = as_f32(make_inputs(s, me).x);
  const std::int64_t H = s.hidden;
  const ExpertRows y = [&](int rank, std::int64_t, std::int64_t token, float* out) {
    for (std::int64_t h = 0; h < H; ++h)
      out[h] = expert_output(xf.data<float>()[token * H + h], rank, h);
    round_in_place(out, H, ydtype);
  };
  CombineReference options;
  options.ydtype = ydtype;
  options.partials_in_input_dtype = partials_in_input_dtype;
  return expected_combine(Topology::of(world(), s.experts), me, inputs_of(s), y, options);
}

}  // namespace epx::test
