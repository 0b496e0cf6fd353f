// SwiGLU: the element-wise gate, the SwiGLU MLP built from three linears, and
// the routed experts as one MLP per group of rows.
#include <cmath>

#include <epx/model_kernels.hpp>

#include "core/check.hpp"

namespace epx::kernels {

void swiglu_forward(float* h, const float* g, const float* u, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) h[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

// With sig = 1 / (1 + e^-g): d silu/dg = sig (1 + g (1 - sig)).
void swiglu_backward(float* dg, float* du, const float* dh, const float* g, const float* u,
                     std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) {
    const float sig = 1.0f / (1.0f + expf(-g[i]));
    const float silu = g[i] * sig;
    const float d = dh[i];  // read first: dg or du may alias dh
    dg[i] = d * u[i] * (sig * (1.0f + g[i] * (1.0f - sig)));
    du[i] = d * silu;
  }
}

void mlp_forward(float* y, float* saved, const float* x, std::int64_t n, const MlpWeights& w,
                 bool accumulate) {
  const std::int64_t block = n * w.inter;
  float* g = saved;
  float* u = saved + block;
  float* h = saved + 2 * block;
  linear_forward(g, x, w.gate, n, w.hidden, w.inter);
  linear_forward(u, x, w.up, n, w.hidden, w.inter);
  swiglu_forward(h, g, u, block);
  linear_forward(y, h, w.down, n, w.inter, w.hidden, accumulate);
}

void mlp_forward_row(float* y, float* saved, const float* x, const MlpWeights& w, bool accumulate) {
  float* g = saved;
  float* u = saved + w.inter;
  float* h = saved + 2 * w.inter;
  linear_forward_row(g, x, w.gate, w.hidden, w.inter);
  linear_forward_row(u, x, w.up, w.hidden, w.inter);
  swiglu_forward(h, g, u, w.inter);
  linear_forward_row(y, h, w.down, w.inter, w.hidden, accumulate);
}

void mlp_backward_input(float* dx, float* dgu, const float* dy, const float* saved, std::int64_t n,
                        const MlpWeights& w, float* dh_scratch, bool accumulate) {
  const std::int64_t block = n * w.inter;
  const float* g = saved;
  const float* u = saved + block;
  float* dg = dgu;
  float* du = dgu + block;
  linear_backward_input(dh_scratch, dy, w.down, n, w.inter, w.hidden, false);
  swiglu_backward(dg, du, dh_scratch, g, u, block);
  linear_backward_input(dx, dg, w.gate, n, w.hidden, w.inter, accumulate);
  linear_backward_input(dx, du, w.up, n, w.hidden, w.inter, true);
}

void mlp_backward_weight(const MlpGrads& dw, const float* dy, const float* x, const float* saved,
                         const float* dgu, std::int64_t n, const MlpWeights& w) {
  const std::int64_t block = n * w.inter;
  linear_backward_weight(dw.down, dy, saved + 2 * block, n, w.inter, w.hidden);
  linear_backward_weight(dw.gate, dgu, x, n, w.hidden, w.inter);
  linear_backward_weight(dw.up, dgu + block, x, n, w.hidden, w.inter);
}

// Each weight gradient depends only on its own inputs, so computing them
// after the input gradient changes no bits.
void mlp_backward(float* dx, const MlpGrads& dw, const float* dy, const float* x,
                  const float* saved, std::int64_t n, const MlpWeights& w, float* scratch,
                  bool accumulate) {
  float* dh = scratch;
  float* dgu = scratch + n * w.inter;
  mlp_backward_input(dx, dgu, dy, saved, n, w, dh, accumulate);
  mlp_backward_weight(dw, dy, x, saved, dgu, n, w);
}

namespace {

void check_offsets(const std::int64_t* offsets, int num_groups, const char* op) {
  EPX_CHECK_GE(num_groups, 0, InvalidArgument, op);
  EPX_CHECK_EQ(offsets[0], std::int64_t{0}, InvalidArgument, op);
  for (int e = 0; e < num_groups; ++e)
    EPX_CHECK(offsets[e + 1] >= offsets[e], InvalidArgument, op, ": offsets[", e + 1,
              "] = ", offsets[e + 1], ", expected >= offsets[", e, "] = ", offsets[e]);
}

// Checks the offsets, then calls f(e, first row, rows, hidden, inter) for
// every non-empty group e in order.
template <class F>
void for_each_group(const std::int64_t* offsets, int num_groups, const MlpWeights* w,
                    const char* op, F&& f) {
  check_offsets(offsets, num_groups, op);
  for (int e = 0; e < num_groups; ++e) {
    const std::int64_t row0 = offsets[e], rows = offsets[e + 1] - offsets[e];
    if (rows > 0) f(e, row0, rows, w[e].hidden, w[e].inter);
  }
}

}  // namespace

void grouped_mlp_forward(float* y, float* saved, const float* x, const std::int64_t* offsets,
                         int num_groups, const MlpWeights* w) {
  for_each_group(
      offsets, num_groups, w, "grouped_mlp_forward",
      [&](int e, std::int64_t row0, std::int64_t rows, std::int64_t hidden, std::int64_t inter) {
        mlp_forward(y + row0 * hidden, saved + row0 * 3 * inter, x + row0 * hidden, rows, w[e]);
      });
}

void grouped_mlp_backward(float* dx, const MlpGrads* dw, const float* dy, const float* x,
                          const float* saved, const std::int64_t* offsets, int num_groups,
                          const MlpWeights* w, float* scratch, bool accumulate) {
  for_each_group(
      offsets, num_groups, w, "grouped_mlp_backward",
      [&](int e, std::int64_t row0, std::int64_t rows, std::int64_t hidden, std::int64_t inter) {
        mlp_backward(dx + row0 * hidden, dw[e], dy + row0 * hidden, x + row0 * hidden,
                     saved + row0 * 3 * inter, rows, w[e], scratch, accumulate);
      });
}

void grouped_mlp_backward_input(float* dx, float* dgu, const float* dy, const float* saved,
                                const std::int64_t* offsets, int num_groups, const MlpWeights* w,
                                float* dh_scratch, bool accumulate) {
  for_each_group(
      offsets, num_groups, w, "grouped_mlp_backward_input",
      [&](int e, std::int64_t row0, std::int64_t rows, std::int64_t hidden, std::int64_t inter) {
        mlp_backward_input(dx + row0 * hidden, dgu + row0 * 2 * inter, dy + row0 * hidden,
                           saved + row0 * 3 * inter, rows, w[e], dh_scratch, accumulate);
      });
}

void grouped_mlp_backward_weight(const MlpGrads* dw, const float* dy, const float* x,
                                 const float* saved, const float* dgu, const std::int64_t* offsets,
                                 int num_groups, const MlpWeights* w) {
  for_each_group(
      offsets, num_groups, w, "grouped_mlp_backward_weight",
      [&](int e, std::int64_t row0, std::int64_t rows, std::int64_t hidden, std::int64_t inter) {
        mlp_backward_weight(dw[e], dy + row0 * hidden, x + row0 * hidden, saved + row0 * 3 * inter,
                            dgu + row0 * 2 * inter, rows, w[e]);
      });
}

}  // namespace epx::kernels
