// The MoE FFN of inference: h += sum_k w_k expert_k(xn) + shared(xn),
// xn = RMSNorm(h), as in training (model/moe_block.cpp) but without saving
// anything for a backward, and with every sum of the routed outputs in one
// order whatever the placement: w_k * out_k per (token, k), added in k
// order from +0 in f32 (the 1-rank training sum).
//
// Normal mode (prefill): route -> dispatch xn -> each received (row, local
// expert) pair into its expert's block -> SwiGLU per expert -> w_k * out
// into column block k of the row -> combine (each column block has one
// non-zero term over the ranks, so its sum is exact) -> the owner adds the
// K blocks in k order.
// Low-latency mode (decode): dispatch puts each (token, expert) pair in the
// expert's slot -> SwiGLU per expert over its count rows -> the low-latency
// combine, which sums w_k * out_k in k order in f32 on the owner.
// With fp8 dispatch both paths send e4m3 rows with per-token 1x128 scales,
// cast once per token by the sender, and the experts take them dequantised
// (the training forward's recipe); the combine stays f32.
// With a balancer placement, both dispatch to the physical slot (replica)
// route_to_replicas picks for each (token, expert); nothing else changes.
#include <algorithm>
#include <cstring>

#include <epx/kernels.hpp>

#include "model/router_params.hpp"
#include "serve/forward.hpp"

namespace epx::serve {

// Local expert e's SwiGLU over `rows` contiguous rows of x into y (row by
// row where mlp() goes so: with deterministic a row's bits do not depend on
// the others).
void Forward::expert_rows(int layer, int e, float* y, const float* x, std::int64_t rows) {
  const model::ModelConfig& c = model_.config();
  const model::LayerIndex& li = model_.layers[layer];
  model::ParamStore& X = model_.experts;
  const std::int64_t H = c.hidden_size, Im = c.moe_intermediate_size;
  const kernels::MlpWeights w{X.value(li.expert_gate[e]), X.value(li.expert_up[e]),
                              X.value(li.expert_down[e]), H, Im};
  mlp(y, mlp_, x, rows, w, false);
}

void Forward::routed_normal(Rows& r, int layer) {
  const model::ModelConfig& c = model_.config();
  const std::int64_t T = r.T, H = c.hidden_size, K = c.top_k;
  const int El = model_.local_experts();
  const Tensor x_t = Tensor::wrap(T > 0 ? r.xn.data() : nullptr, {T, H}, DType::f32);
  const Tensor idx_t = Tensor::wrap(T > 0 ? r.slot_idx.data() : nullptr, {T, K}, DType::i64);
  const Tensor w_t = Tensor::wrap(T > 0 ? r.topk_w.data() : nullptr, {T, K}, DType::f32);
  const comm::Layout layout = buffer_.get_dispatch_layout(idx_t, model_.ep_size() * El);
  comm::DispatchOptions dopt;
  dopt.fp8 = fp8_dispatch_;
  comm::DispatchResult got = buffer_.dispatch(x_t, idx_t, w_t, layout, dopt);
  const std::int64_t M = got.x.dim(0);
  // With fp8 the experts take the dequantised rows, as in training (model/moe_block.cpp).
  Tensor xr = got.x;
  if (dopt.fp8 && M > 0) xr = kernels::per_token_cast_back(got.x, got.x_scales, DType::f32);
  const float* xrows = M > 0 ? xr.data<float>() : nullptr;
  const std::int64_t* lidx = got.topk_idx.data<std::int64_t>();
  const float* rw = got.topk_weights.data<float>();

  // Expert blocks: pairs (m, k) by local expert, then row, in order.
  std::vector<std::int64_t> offsets(static_cast<std::size_t>(El) + 1, 0);
  for (std::int64_t i = 0; i < M * K; ++i)
    if (lidx[i] >= 0) ++offsets[static_cast<std::size_t>(lidx[i]) + 1];
  for (int e = 0; e < El; ++e) offsets[e + 1] += offsets[e];
  const std::int64_t pairs = offsets[El];
  std::vector<std::int64_t> pair_of(static_cast<std::size_t>(M * K), -1);
  std::vector<std::int64_t> fill(offsets.begin(), offsets.end() - 1);
  float* xp = detail::at_least(xp_, pairs * H);
  for (std::int64_t m = 0; m < M; ++m)
    for (std::int64_t k = 0; k < K; ++k) {
      const std::int64_t e = lidx[m * K + k];
      if (e < 0) continue;
      const std::int64_t p = fill[e]++;
      pair_of[m * K + k] = p;
      std::memcpy(xp + p * H, xrows + m * H, sizeof(float) * H);
    }
  float* outp = detail::at_least(outp_, pairs * H);
  for (int e = 0; e < El; ++e)
    expert_rows(layer, e, outp + offsets[e] * H, xp + offsets[e] * H, offsets[e + 1] - offsets[e]);

  // w_mk * out into column block k of row m, straight into combine's input.
  const std::int64_t Z = K * H;
  Tensor y = buffer_.combine_input(got.handle, Z, DType::f32);
  float* yd = y.data<float>();
  if (M > 0) std::memset(yd, 0, sizeof(float) * M * Z);
  for (std::int64_t m = 0; m < M; ++m)
    for (std::int64_t k = 0; k < K; ++k) {
      const std::int64_t p = pair_of[m * K + k];
      if (p < 0) continue;
      const float wk = rw[m * K + k];
      const float* o = outp + p * H;
      float* ym = yd + m * Z + k * H;
      for (std::int64_t j = 0; j < H; ++j) ym[j] = wk * o[j];
    }
  const comm::Handle handle = got.handle;
  xr = Tensor();
  got = comm::DispatchResult();  // frees the receive rows
  const Tensor back = buffer_.combine(y, handle);
  y = Tensor();

  const float* b = back.data<float>();
  float* out = r.out.data();
  for (std::int64_t t = 0; t < T; ++t) {
    float* o = out + t * H;
    std::fill(o, o + H, 0.0f);
    for (std::int64_t k = 0; k < K; ++k) {
      const float* bk = b + t * Z + k * H;
      for (std::int64_t j = 0; j < H; ++j) o[j] += bk[j];
    }
  }
}

void Forward::ll_dispatch(Rows& r, InFlight& f, bool hook) {
  const model::ModelConfig& c = model_.config();
  const std::int64_t T = r.T, H = c.hidden_size, K = c.top_k;
  const Tensor x_t = Tensor::wrap(T > 0 ? r.xn.data() : nullptr, {T, H}, DType::f32);
  const Tensor idx_t = Tensor::wrap(T > 0 ? r.slot_idx.data() : nullptr, {T, K}, DType::i64);
  comm::LowLatencyOptions lo;
  lo.fp8 = fp8_dispatch_;  // as the normal path's dispatch: the same rows reach the experts
  lo.return_recv_hook = hook;
  f.dispatch = buffer_.low_latency_dispatch(x_t, idx_t, lo);
}

void Forward::ll_experts_combine(Rows& r, int layer, InFlight& f, bool hook) {
  const model::ModelConfig& c = model_.config();
  const std::int64_t T = r.T, H = c.hidden_size, K = c.top_k;
  const int El = model_.local_experts();
  if (f.dispatch.hook) f.dispatch.hook();
  const std::int64_t slots = f.dispatch.x.dim(1);
  const std::int32_t* count = f.dispatch.count.data<std::int32_t>();
  f.y = Tensor::empty({El, slots, H}, DType::f32);
  for (int e = 0; e < El; ++e) {
    float* y = f.y.data<float>() + e * slots * H;
    if (!fp8_dispatch_) {
      expert_rows(layer, e, y, f.dispatch.x.data<float>() + e * slots * H, count[e]);
      continue;
    }
    // The count valid rows of expert e, dequantised as the normal path's.
    const std::int64_t n = count[e], S = H / 128;
    if (n == 0) continue;
    std::uint8_t* q = f.dispatch.x.data<std::uint8_t>() + e * slots * H;
    float* sc = f.dispatch.x_scales.data<float>() + e * slots * S;
    const Tensor xe = kernels::per_token_cast_back(
        Tensor::wrap(q, {n, H}, DType::e4m3), Tensor::wrap(sc, {n, S}, DType::f32), DType::f32);
    expert_rows(layer, e, y, xe.data<float>(), n);
  }
  f.handle = f.dispatch.handle;
  f.dispatch = comm::LowLatencyDispatchResult();  // its half of the buffer is free again
  const Tensor idx_t = Tensor::wrap(T > 0 ? r.slot_idx.data() : nullptr, {T, K}, DType::i64);
  const Tensor w_t = Tensor::wrap(T > 0 ? r.topk_w.data() : nullptr, {T, K}, DType::f32);
  comm::LowLatencyOptions lo;
  lo.fp8 = false;  // the combine stays f32 (fp8 is the dispatch's option only)
  lo.return_recv_hook = hook;
  f.combine = buffer_.low_latency_combine(f.y, idx_t, w_t, f.handle, lo);
}

void Forward::ll_receive(Rows& r, InFlight& f) {
  const std::int64_t H = model_.config().hidden_size;
  if (f.combine.hook) f.combine.hook();
  if (r.T > 0) std::memcpy(r.out.data(), f.combine.x.data<float>(), sizeof(float) * r.T * H);
  f = InFlight();
}

void Forward::route(Rows& r, int layer) {
  const model::ModelConfig& c = model_.config();
  const model::LayerIndex& li = model_.layers[layer];
  model::ParamStore& P = model_.dense;
  const std::int64_t T = r.T, H = c.hidden_size, E = c.num_experts, K = c.top_k;
  float* xn = detail::at_least(r.xn, T * H);
  kernels::rmsnorm_forward(xn, detail::at_least(r.rstd, T), r.h.data(), P.value(li.ffn_norm), T, H,
                           static_cast<float>(c.rms_norm_eps));
  float* logits = detail::at_least(r.logits_e, T * E);
  linear(logits, xn, P.value(li.router), T, H, E, false);
  std::int64_t* idx = detail::at_least(r.topk_idx, T * K);
  kernels::router_forward(idx, detail::at_least(r.topk_w, T * K),
                          detail::at_least(r.route_scores, T * E), logits,
                          model_.bias[li.moe_index].data(), T, model::router_params(c));
  std::int64_t* cnt = counts_.data() + static_cast<std::int64_t>(li.moe_index) * E;
  for (std::int64_t i = 0; i < T * K; ++i)
    if (idx[i] >= 0) ++cnt[idx[i]];
  std::int64_t* slot = detail::at_least(r.slot_idx, T * K);
  if (placement_ && T > 0) {
    const Tensor s = balancer::route_to_replicas(
        Tensor::wrap(idx, {T, K}, DType::i64), *placement_,
        {li.moe_index, model_.ep_rank(), model_.ep_size(), placement_nodes_});
    std::memcpy(slot, s.raw(), sizeof(std::int64_t) * T * K);
  } else {
    std::copy(idx, idx + T * K, slot);
  }
  detail::at_least(r.out, T * H);
}

void Forward::shared_and_add(Rows& r, int layer) {
  const model::ModelConfig& c = model_.config();
  const model::LayerIndex& li = model_.layers[layer];
  model::ParamStore& P = model_.dense;
  const std::int64_t T = r.T, H = c.hidden_size, Im = c.moe_intermediate_size;
  float* out = r.out.data();
  const float* xn = r.xn.data();
  if (li.shared_gate >= 0) {
    const std::int64_t Is = static_cast<std::int64_t>(c.num_shared_experts) * Im;
    const kernels::MlpWeights sw{P.value(li.shared_gate), P.value(li.shared_up),
                                 P.value(li.shared_down), H, Is};
    mlp(out, r.mlp, xn, T, sw, true);
  }
  float* h = r.h.data();
  for (std::int64_t i = 0; i < T * H; ++i) h[i] += out[i];
}

// out = routed + shared(xn) (added in this order, as in training); h += out.
void Forward::moe(Rows& r, int layer) {
  route(r, layer);
  if (low_latency_) {
    InFlight f;
    ll_dispatch(r, f, false);
    ll_experts_combine(r, layer, f, false);
    ll_receive(r, f);
  } else {
    routed_normal(r, layer);
  }
  shared_and_add(r, layer);
}

}  // namespace epx::serve
