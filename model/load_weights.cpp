#include "model/load_weights.hpp"

#include <algorithm>

#include "model/safetensors.hpp"

namespace epx::model {

namespace {

void load_into(const SafetensorsReader& r, const std::string& name, const ParamInfo& p,
               std::vector<float>& array) {
  const Tensor t = r.load_f32(name, p.shape);
  std::copy(t.data<float>(), t.data<float>() + p.numel, array.begin() + p.offset);
}

}  // namespace

void load_weights(Model& model, const std::string& path) {
  const SafetensorsReader r(path);
  for (const ParamInfo& p : model.dense.params()) load_into(r, p.name, p, model.dense.values);
  const std::vector<std::string> names = model.expert_names();
  for (std::size_t i = 0; i < names.size(); ++i)
    load_into(r, names[i], model.experts.info(static_cast<int>(i)), model.experts.values);
  const std::int64_t E = model.config().num_experts;
  for (int l = 0; l < model.num_moe_layers(); ++l) {
    std::vector<float>& b = model.bias[static_cast<std::size_t>(l)];
    std::fill(b.begin(), b.end(), 0.0f);
    const std::string name = model.bias_name(l);
    if (!r.contains(name)) continue;
    const Tensor t = r.load_f32(name, {E});
    std::copy(t.data<float>(), t.data<float>() + E, b.begin());
  }
}

}  // namespace epx::model
