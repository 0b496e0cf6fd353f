// The MoE FFN: h += sum_k w_k expert_k(xn) + shared(xn), xn = RMSNorm(h),
// with the routed experts wherever the EP group holds them.
//
// Forward: route (router logits, DeepSeek-V3 selection) -> dispatch xn with
// the top-k and gate weights -> each received (row, local expert) pair into
// its expert's block -> grouped SwiGLU GEMM -> per row y_m = sum over its
// local k, in k order, of w_k * out -> combine (the token owner sums the
// ranks' y rows in comm's documented order).
// Backward: the cached dispatch brings each token's output gradient to the
// rows it went to; the experts' backward gives dx per pair and dw_k =
// dy . out_k; one combine of [dx | dw] (H + K columns) returns both to the
// owner. A dw entry is non-zero only on the rank holding that expert, so its
// sum is exact. Then the router's backward (through w), the shared expert's,
// and the norm's.
#include <chrono>
#include <cstring>

#include <epx/kernels.hpp>

#include "core/stopwatch.hpp"
#include "model/compute_turn.hpp"
#include "model/router_params.hpp"
#include "model/saved.hpp"

namespace epx::model {

namespace {

using Clock = core::SteadyClock;
using core::seconds_since;

kernels::MlpWeights shared_mlp(ParamStore& P, const LayerIndex& li, const ModelConfig& c) {
  return {P.value(li.shared_gate), P.value(li.shared_up), P.value(li.shared_down), c.hidden_size,
          static_cast<std::int64_t>(c.num_shared_experts) * c.moe_intermediate_size};
}

// Routed expert e's weights (or their gradients) of this rank, in local order.
std::vector<kernels::MlpWeights> expert_weights(ParamStore& X, const LayerIndex& li,
                                                std::int64_t H, std::int64_t Im) {
  std::vector<kernels::MlpWeights> w;
  for (std::size_t e = 0; e < li.expert_gate.size(); ++e)
    w.push_back({X.value(li.expert_gate[e]), X.value(li.expert_up[e]), X.value(li.expert_down[e]), H, Im});
  return w;
}

std::vector<kernels::MlpGrads> expert_grads(ParamStore& X, const LayerIndex& li) {
  std::vector<kernels::MlpGrads> g;
  for (std::size_t e = 0; e < li.expert_gate.size(); ++e)
    g.push_back({X.grad(li.expert_gate[e]), X.grad(li.expert_up[e]), X.grad(li.expert_down[e])});
  return g;
}

}  // namespace

void Engine::note_comm(Clock::time_point t0) {
  const Clock::time_point t1 = Clock::now();
  ep_seconds_ += std::chrono::duration<double>(t1 - t0).count();
  if (!record_comm_) return;
  const auto ms = [](Clock::time_point t) {
    return std::chrono::duration<double, std::milli>(t.time_since_epoch()).count();
  };
  comm_pieces_.push_back({ms(t0), ms(t1)});
}

void Engine::moe_forward(int layer, Saved& sv, std::vector<float>& h, bool count) {
  const ModelConfig& c = model_.config();
  const LayerIndex& li = model_.layers[layer];
  ParamStore& P = model_.dense;
  MoeSaved& s = sv.moe[layer];
  const std::int64_t T = sv.tokens, H = c.hidden_size, E = c.num_experts, K = c.top_k;
  const std::int64_t Im = c.moe_intermediate_size;
  const int El = model_.local_experts();

  // Route.
  norm_forward(s.norm, h, P.value(li.ffn_norm), T, H, static_cast<float>(c.rms_norm_eps));
  float* xn = s.norm.xn.data();
  float* logits = at_least(sv.logits_e, T * E);
  kernels::linear_forward(logits, xn, P.value(li.router), T, H, E);
  kernels::router_forward(at_least(s.topk_idx, T * K), at_least(s.topk_weights, T * K),
                          at_least(s.scores, T * E), logits,
                          model_.bias[li.moe_index].data(), T, router_params(c));
  if (count) {
    auto& cnt = counts_[li.moe_index];
    for (std::int64_t i = 0; i < T * K; ++i)
      if (s.topk_idx[i] >= 0) ++cnt[s.topk_idx[i]];
  }

  // Dispatch, to physical slots: slot = expert without a placement, else the
  // replica route_to_replicas picks (s.topk_idx stays logical for the router).
  auto t0 = Clock::now();
  const Tensor x_t = Tensor::wrap(xn, {T, H}, DType::f32);
  Tensor idx_t = Tensor::wrap(s.topk_idx.data(), {T, K}, DType::i64);
  const Tensor w_t = Tensor::wrap(s.topk_weights.data(), {T, K}, DType::f32);
  if (placement_)
    idx_t = balancer::route_to_replicas(
        idx_t, *placement_, {li.moe_index, model_.ep_rank(), model_.ep_size(), placement_nodes_});
  comm::DispatchOptions dopt;
  dopt.fp8 = options_.fp8_dispatch;
  comm::DispatchResult got;
  {
    CommScope comm(turn_);
    const comm::Layout layout =
        buffer_.get_dispatch_layout(idx_t, model_.ep_size() * model_.local_experts());
    got = buffer_.dispatch(x_t, idx_t, w_t, layout, dopt);
  }
  note_comm(t0);
  const std::int64_t M = got.x.dim(0);
  s.handle = got.handle;
  s.recv = M;
  Tensor xr = dopt.fp8 ? kernels::per_token_cast_back(got.x, got.x_scales, DType::f32) : got.x;
  const float* xrows = xr.data<float>();
  const std::int64_t* lidx = got.topk_idx.data<std::int64_t>();
  const float* rw = got.topk_weights.data<float>();
  s.recv_weights.assign(rw, rw + M * K);

  // Expert blocks: pairs (m, k) by local expert, then row, in order.
  s.offsets.assign(static_cast<std::size_t>(El) + 1, 0);
  for (std::int64_t i = 0; i < M * K; ++i)
    if (lidx[i] >= 0) ++s.offsets[static_cast<std::size_t>(lidx[i]) + 1];
  for (int e = 0; e < El; ++e) s.offsets[e + 1] += s.offsets[e];
  const std::int64_t pairs = s.offsets[El];
  s.pair_of.assign(static_cast<std::size_t>(M * K), -1);
  s.pair_row.resize(static_cast<std::size_t>(pairs));
  std::vector<std::int64_t> fill(s.offsets.begin(), s.offsets.end() - 1);
  float* xp = at_least(s.xp, pairs * H);
  for (std::int64_t m = 0; m < M; ++m)
    for (std::int64_t k = 0; k < K; ++k) {
      const std::int64_t e = lidx[m * K + k];
      if (e < 0) continue;
      const std::int64_t p = fill[e]++;
      s.pair_of[m * K + k] = p;
      s.pair_row[p] = m;
      std::memcpy(xp + p * H, xrows + m * H, sizeof(float) * H);
    }
  xr = Tensor();
  got = comm::DispatchResult();  // frees the receive rows; the handle stays in s

  // Experts.
  t0 = Clock::now();
  const std::vector<kernels::MlpWeights> w = expert_weights(model_.experts, li, H, Im);
  float* outp = at_least(s.outp, pairs * H);
  kernels::grouped_mlp_forward(outp, at_least(s.mlp, pairs * 3 * Im), xp, s.offsets.data(), El,
                               w.data());
  expert_seconds_ += seconds_since(t0);
  expert_pairs_ += pairs;

  // y_m = sum over local k (in k order) of w_mk * out, straight into combine's input.
  Tensor y = buffer_.combine_input(s.handle, H, DType::f32);
  float* yd = y.data<float>();
  std::memset(yd, 0, sizeof(float) * M * H);
  for (std::int64_t m = 0; m < M; ++m)
    for (std::int64_t k = 0; k < K; ++k) {
      const std::int64_t p = s.pair_of[m * K + k];
      if (p < 0) continue;
      const float wk = s.recv_weights[m * K + k];
      const float* o = outp + p * H;
      float* ym = yd + m * H;
      for (std::int64_t j = 0; j < H; ++j) ym[j] += wk * o[j];
    }
  t0 = Clock::now();
  Tensor routed;
  {
    CommScope comm(turn_);
    routed = buffer_.combine(y, s.handle);
  }
  note_comm(t0);
  y = Tensor();

  // out = routed + shared; h += out.
  const float* r = routed.data<float>();
  if (li.shared_gate >= 0) {
    const std::int64_t Is = static_cast<std::int64_t>(c.num_shared_experts) * Im;
    std::vector<float>& out = sv.out;
    out.assign(r, r + T * H);
    kernels::mlp_forward(out.data(), at_least(s.shared, T * 3 * Is), xn, T, shared_mlp(P, li, c),
                         /*accumulate=*/true);
    for (std::int64_t i = 0; i < T * H; ++i) h[i] += out[i];
  } else {
    for (std::int64_t i = 0; i < T * H; ++i) h[i] += r[i];
  }
}

void Engine::moe_backward(int layer, Saved& sv, std::vector<float>& dh) {
  const ModelConfig& c = model_.config();
  const LayerIndex& li = model_.layers[layer];
  ParamStore& P = model_.dense;
  MoeSaved& s = sv.moe[layer];
  const std::int64_t T = sv.tokens, H = c.hidden_size, E = c.num_experts, K = c.top_k;
  const std::int64_t Im = c.moe_intermediate_size, M = s.recv;
  const int El = model_.local_experts();
  const std::int64_t pairs = s.offsets[El];
  const float* xn = s.norm.xn.data();

  // dxn from the shared expert (written), the routed path and the router (added).
  std::vector<float>& dxn = sv.dxn;
  dxn.assign(static_cast<std::size_t>(T * H), 0.0f);
  if (li.shared_gate >= 0) {
    const std::int64_t Is = static_cast<std::int64_t>(c.num_shared_experts) * Im;
    float* scratch = at_least(sv.shared_scratch, 3 * T * Is);
    const kernels::MlpGrads g{P.grad(li.shared_gate), P.grad(li.shared_up), P.grad(li.shared_down)};
    mlp_grads(sv.held(), dxn.data(), g, dh.data(), xn, s.shared.data(), T, shared_mlp(P, li, c),
              scratch, false);
  }

  // The output gradient at every received row (combine's backward).
  auto t0 = Clock::now();
  comm::DispatchResult got;
  {
    CommScope comm(turn_);
    got = buffer_.dispatch(Tensor::wrap(dh.data(), {T, H}, DType::f32), s.handle);
  }
  note_comm(t0);
  const float* dy = got.x.data<float>();

  // Per pair: d(out) = w * dy_m, dw = dy_m . out.
  float* doutp = at_least(sv.doutp, pairs * H);
  std::vector<float>& dw = sv.dw;
  dw.assign(static_cast<std::size_t>(M * K), 0.0f);
  for (std::int64_t m = 0; m < M; ++m)
    for (std::int64_t k = 0; k < K; ++k) {
      const std::int64_t p = s.pair_of[m * K + k];
      if (p < 0) continue;
      const float wk = s.recv_weights[m * K + k];
      const float* g = dy + m * H;
      const float* o = s.outp.data() + p * H;
      float* d = doutp + p * H;
      float dot = 0.0f;
      for (std::int64_t j = 0; j < H; ++j) {
        d[j] = wk * g[j];
        dot += g[j] * o[j];
      }
      dw[m * K + k] = dot;
    }
  got = comm::DispatchResult();

  // The experts' backward.
  const std::vector<kernels::MlpWeights> w = expert_weights(model_.experts, li, H, Im);
  const std::vector<kernels::MlpGrads> g = expert_grads(model_.experts, li);
  std::int64_t most = 0;
  for (int e = 0; e < El; ++e) most = std::max(most, s.offsets[e + 1] - s.offsets[e]);
  float* dxp = at_least(sv.dxp, pairs * H);
  float* scratch = at_least(sv.expert_scratch, 3 * most * Im);
  t0 = Clock::now();
  if (DeferredWeightGrads* held = sv.held()) {
    // The zero-bubble split: the experts' weight GEMMs wait for weight_part.
    float* dgu = held->take(2 * pairs * Im);
    kernels::grouped_mlp_backward_input(dxp, dgu, doutp, s.mlp.data(), s.offsets.data(), El,
                                        w.data(), scratch, false);
    const float* dyp = held->keep(doutp, pairs * H);
    held->jobs.emplace_back([this, &s, g, w, El, dyp, dgu] {
      const auto start = Clock::now();
      kernels::grouped_mlp_backward_weight(g.data(), dyp, s.xp.data(), s.mlp.data(), dgu,
                                           s.offsets.data(), El, w.data());
      expert_seconds_ += seconds_since(start);
    });
  } else {
    kernels::grouped_mlp_backward(dxp, g.data(), doutp, s.xp.data(), s.mlp.data(), s.offsets.data(),
                                  El, w.data(), scratch, false);
  }
  expert_seconds_ += seconds_since(t0);

  // [dx | dw] per received row back to the token owners.
  const std::int64_t Z = H + K;
  Tensor z = buffer_.combine_input(s.handle, Z, DType::f32);
  float* zd = z.data<float>();
  std::memset(zd, 0, sizeof(float) * M * Z);
  for (std::int64_t m = 0; m < M; ++m)
    for (std::int64_t k = 0; k < K; ++k) {
      const std::int64_t p = s.pair_of[m * K + k];
      if (p < 0) continue;
      const float* d = dxp + p * H;
      float* zm = zd + m * Z;
      for (std::int64_t j = 0; j < H; ++j) zm[j] += d[j];
      zm[H + k] = dw[m * K + k];
    }
  t0 = Clock::now();
  Tensor back;
  {
    CommScope comm(turn_);
    back = buffer_.combine(z, s.handle);
  }
  note_comm(t0);
  z = Tensor();
  s.handle = comm::Handle();
  const float* bd = back.data<float>();

  // Router: d(logits) from d(weights), then its weight and input gradients.
  float* dweights = at_least(sv.dweights, T * K);
  for (std::int64_t t = 0; t < T; ++t) {
    for (std::int64_t j = 0; j < H; ++j) dxn[t * H + j] += bd[t * Z + j];
    for (std::int64_t k = 0; k < K; ++k) dweights[t * K + k] = bd[t * Z + H + k];
  }
  float* dlogits = at_least(sv.dlogits_e, T * E);
  kernels::router_backward(dlogits, dweights, s.scores.data(), s.topk_idx.data(), T,
                           router_params(c));
  weight_grad(sv.held(), P.grad(li.router), dlogits, /*dy_changes=*/true, xn, T, H, E);
  kernels::linear_backward_input(dxn.data(), dlogits, P.value(li.router), T, H, E, true);
  norm_backward(dh, P.grad(li.ffn_norm), dxn.data(), s.norm, P.value(li.ffn_norm), T, H);
}

}  // namespace epx::model
