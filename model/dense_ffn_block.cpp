// h += down(silu(gate(xn)) * up(xn)), xn = RMSNorm(h): the first first_k_dense layers.
#include <epx/model_kernels.hpp>

#include "model/saved.hpp"

namespace epx::model {

namespace {

kernels::MlpWeights dense_mlp(ParamStore& P, const LayerIndex& li, std::int64_t H, std::int64_t I) {
  return {P.value(li.mlp_gate), P.value(li.mlp_up), P.value(li.mlp_down), H, I};
}

}  // namespace

void Engine::dense_ffn_forward(int layer, Saved& sv, std::vector<float>& h) {
  const ModelConfig& c = model_.config();
  const LayerIndex& li = model_.layers[layer];
  ParamStore& P = model_.dense;
  DenseFfnSaved& s = sv.dense[layer];
  const std::int64_t T = sv.tokens, H = c.hidden_size, I = c.intermediate_size;
  norm_forward(s.norm, h, P.value(li.ffn_norm), T, H, static_cast<float>(c.rms_norm_eps));
  kernels::mlp_forward(h.data(), at_least(s.mlp, T * 3 * I), s.norm.xn.data(), T,
                       dense_mlp(P, li, H, I), /*accumulate=*/true);
}

void Engine::dense_ffn_backward(int layer, Saved& sv, std::vector<float>& dh) {
  const ModelConfig& c = model_.config();
  const LayerIndex& li = model_.layers[layer];
  ParamStore& P = model_.dense;
  DenseFfnSaved& s = sv.dense[layer];
  const std::int64_t T = sv.tokens, H = c.hidden_size, I = c.intermediate_size;
  float* dxn = at_least(sv.scratch, T * H + 3 * T * I);
  const kernels::MlpGrads g{P.grad(li.mlp_gate), P.grad(li.mlp_up), P.grad(li.mlp_down)};
  mlp_grads(sv.held(), dxn, g, dh.data(), s.norm.xn.data(), s.mlp.data(), T, dense_mlp(P, li, H, I),
            dxn + T * H, false);
  norm_backward(dh, P.grad(li.ffn_norm), dxn, s.norm, P.value(li.ffn_norm), T, H);
}

}  // namespace epx::model
