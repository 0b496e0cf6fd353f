// The normal combine's reference (single process, plain loops), shared by
// the combine and inter-node suites.
#pragma once

#include "comm_fixture.hpp"

namespace epx::test {

// y on this rank: expert_output() of every received row (x already f32).
inline Tensor make_expert_outputs(const Tensor& recv_x_f32, DType ydtype) {
  const std::int64_t M = recv_x_f32.dim(0), H = recv_x_f32.dim(1);
  Tensor y = Tensor::empty({M, H}, DType::f32);
  const float* x = recv_x_f32.data<float>();
  for (std::int64_t i = 0; i < M * H; ++i) y.data<float>()[i] = expert_output(x[i], world().rank(), i % H);
  return round_to(y, ydtype);
}

// What combine must return on rank `me`: for each token, the sum over the
// nodes (ascending) of P_n, P_n the sum over the ranks of node n holding one
// of its experts (ascending) of their rounded outputs; each sum in f32 from
// +0, rounded once. With `partials_in_input_dtype`, the P_n of the other
// nodes are rounded to y's dtype first. One node: the plain sum in rank order.
inline Tensor expected_combine(const Shape& s, int me, DType ydtype, bool partials_in_input_dtype = false) {
  const int R = s.ranks(), K = s.topk, per_rank = s.experts / R;
  const int N = world().num_nodes();
  const std::int64_t T = s.tokens[me], H = s.hidden;
  RankInputs in = make_inputs(s, me);
  Tensor xf = kernels::cast(in.x, DType::f32);
  std::vector<Tensor> node_sum(static_cast<std::size_t>(N));
  std::vector<std::vector<char>> node_hit(static_cast<std::size_t>(N), std::vector<char>(T, 0));
  for (int n = 0; n < N; ++n) node_sum[n] = Tensor::zeros({T, H}, DType::f32);
  for (int r = 0; r < R; ++r) {
    const int n = world().node_of(r);
    Tensor yr = Tensor::empty({T, H}, DType::f32);
    for (std::int64_t i = 0; i < T * H; ++i) yr.data<float>()[i] = expert_output(xf.data<float>()[i], r, i % H);
    Tensor yr_rounded = kernels::cast(round_to(yr, ydtype), DType::f32);
    for (std::int64_t t = 0; t < T; ++t) {
      bool sent = false;
      for (int k = 0; k < K; ++k) {
        const std::int64_t e = in.topk_idx.data<std::int64_t>()[t * K + k];
        sent |= e >= 0 && e / per_rank == r;
      }
      if (!sent) continue;
      node_hit[n][t] = 1;
      for (std::int64_t h = 0; h < H; ++h)
        node_sum[n].data<float>()[t * H + h] += yr_rounded.data<float>()[t * H + h];
    }
  }
  Tensor sum = Tensor::zeros({T, H}, DType::f32);
  for (int n = 0; n < N; ++n) {
    Tensor part = node_sum[n];
    if (partials_in_input_dtype && n != world().node()) part = kernels::cast(round_to(part, ydtype), DType::f32);
    for (std::int64_t t = 0; t < T; ++t)
      if (node_hit[n][t])
        for (std::int64_t h = 0; h < H; ++h) sum.data<float>()[t * H + h] += part.data<float>()[t * H + h];
  }
  return round_to(sum, ydtype);
}

}  // namespace epx::test
