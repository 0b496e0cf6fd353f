// h += o_proj(attention(RoPE(q_proj(xn)), RoPE(k_proj(xn)), v_proj(xn))), xn = RMSNorm(h).
#include <epx/model_kernels.hpp>

#include "model/saved.hpp"

namespace epx::model {

void norm_forward(NormSaved& s, const std::vector<float>& h, const float* w, std::int64_t T,
                  std::int64_t H, float eps) {
  s.x.assign(h.begin(), h.begin() + T * H);
  kernels::rmsnorm_forward(at_least(s.xn, T * H), at_least(s.rstd, T), s.x.data(), w, T, H, eps);
}

void norm_backward(std::vector<float>& dh, float* dw, const float* dxn, const NormSaved& s,
                   const float* w, std::int64_t T, std::int64_t H) {
  kernels::rmsnorm_backward(dh.data(), dw, dxn, s.x.data(), w, s.rstd.data(), T, H, true);
}

void Engine::attention_forward(int layer, Saved& sv, std::vector<float>& h) {
  const ModelConfig& c = model_.config();
  const LayerIndex& li = model_.layers[layer];
  ParamStore& P = model_.dense;
  AttentionSaved& s = sv.attention[layer];
  const std::int64_t T = sv.tokens, H = c.hidden_size, nh = c.num_heads, hd = c.head_dim();
  norm_forward(s.norm, h, P.value(li.attn_norm), T, H, static_cast<float>(c.rms_norm_eps));
  const float* xn = s.norm.xn.data();
  const float theta = static_cast<float>(c.rope_theta);
  kernels::linear_forward(at_least(s.q, T * H), xn, P.value(li.q), T, H, H);
  kernels::linear_forward(at_least(s.k, T * H), xn, P.value(li.k), T, H, H);
  kernels::linear_forward(at_least(s.v, T * H), xn, P.value(li.v), T, H, H);
  kernels::rope_forward(s.q.data(), sv.positions.data(), T, nh, hd, theta);
  kernels::rope_forward(s.k.data(), sv.positions.data(), T, nh, hd, theta);
  kernels::attention_forward(at_least(s.a, T * H), at_least(s.probs, sv.batch * nh * sv.seq * sv.seq),
                             s.q.data(), s.k.data(), s.v.data(), sv.batch, sv.seq, nh, hd);
  kernels::linear_forward(h.data(), s.a.data(), P.value(li.o), T, H, H, /*accumulate=*/true);
}

void Engine::attention_backward(int layer, Saved& sv, std::vector<float>& dh) {
  const ModelConfig& c = model_.config();
  const LayerIndex& li = model_.layers[layer];
  ParamStore& P = model_.dense;
  AttentionSaved& s = sv.attention[layer];
  const std::int64_t T = sv.tokens, H = c.hidden_size, nh = c.num_heads, hd = c.head_dim();
  const float theta = static_cast<float>(c.rope_theta);
  // Scratch: da, dq, dk, dv, dxn [T,H] each, then the attention's own.
  float* da = at_least(sv.scratch, 5 * T * H + kernels::attention_backward_scratch(sv.seq));
  float* dq = da + T * H;
  float* dk = dq + T * H;
  float* dv = dk + T * H;
  float* dxn = dv + T * H;
  float* attn_scratch = dxn + T * H;
  DeferredWeightGrads* held = sv.held();
  kernels::linear_backward_input(da, dh.data(), P.value(li.o), T, H, H, false);
  weight_grad(held, P.grad(li.o), dh.data(), /*dy_changes=*/true, s.a.data(), T, H, H);
  kernels::attention_backward(dq, dk, dv, da, s.q.data(), s.k.data(), s.v.data(), s.probs.data(),
                              sv.batch, sv.seq, nh, hd, attn_scratch);
  kernels::rope_backward(dq, sv.positions.data(), T, nh, hd, theta);
  kernels::rope_backward(dk, sv.positions.data(), T, nh, hd, theta);
  const float* xn = s.norm.xn.data();
  kernels::linear_backward_input(dxn, dq, P.value(li.q), T, H, H, false);
  kernels::linear_backward_input(dxn, dk, P.value(li.k), T, H, H, true);
  kernels::linear_backward_input(dxn, dv, P.value(li.v), T, H, H, true);
  weight_grad(held, P.grad(li.q), dq, true, xn, T, H, H);
  weight_grad(held, P.grad(li.k), dk, true, xn, T, H, H);
  weight_grad(held, P.grad(li.v), dv, true, xn, T, H, H);
  norm_backward(dh, P.grad(li.attn_norm), dxn, s.norm, P.value(li.attn_norm), T, H);
}

}  // namespace epx::model
