#include "model/load_weights.hpp"

#include <algorithm>

namespace epx::model {

void load_param(const SafetensorsReader& file, const std::string& name, const ParamInfo& p,
                std::vector<float>& array) {
  const Tensor t = file.load_f32(name, p.shape);
  std::copy(t.data<float>(), t.data<float>() + p.numel, array.begin() + p.offset);
}

void load_weights(Model& model, const SafetensorsReader& file, bool require_bias) {
  for (const ParamInfo& p : model.dense.params()) load_param(file, p.name, p, model.dense.values);
  const std::vector<std::string> names = model.expert_names();
  for (std::size_t i = 0; i < names.size(); ++i)
    load_param(file, names[i], model.experts.info(static_cast<int>(i)), model.experts.values);
  const std::int64_t E = model.config().num_experts;
  for (int l = 0; l < model.num_moe_layers(); ++l) {
    std::vector<float>& b = model.bias[static_cast<std::size_t>(l)];
    std::fill(b.begin(), b.end(), 0.0f);
    const std::string name = model.bias_name(l);
    if (!require_bias && !file.contains(name)) continue;  // an outside file may lack it
    const Tensor t = file.load_f32(name, {E});
    std::copy(t.data<float>(), t.data<float>() + E, b.begin());
  }
}

void load_weights(Model& model, const std::string& path) {
  load_weights(model, SafetensorsReader(path), /*require_bias=*/false);
}

}  // namespace epx::model
