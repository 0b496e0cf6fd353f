#include "model/model.hpp"

#include <algorithm>
#include <cmath>

#include "core/check.hpp"

namespace epx::model {

namespace {

std::string layer_prefix(int layer) { return "model.layers." + std::to_string(layer) + "."; }

}  // namespace

std::string Model::expert_name(int layer, int e, const char* which) {
  return layer_prefix(layer) + "mlp.experts." + std::to_string(e) + "." + which + ".weight";
}

std::string Model::bias_name(int moe_index) const {
  for (int l = 0; l < static_cast<int>(layers.size()); ++l)
    if (layers[l].moe_index == moe_index) return layer_prefix(l) + "mlp.gate.e_score_correction_bias";
  EPX_THROW(Internal, "Model::bias_name: no MoE layer ", moe_index);
}

namespace {
constexpr const char* kExpertWeights[] = {"gate_proj", "up_proj", "down_proj"};
}  // namespace

std::vector<std::string> Model::expert_names(const ExpertSlots& slots) const {
  std::vector<std::string> names;
  int moe = 0;
  for (int l = 0; l < static_cast<int>(layers.size()); ++l) {
    if (!layers[l].moe) continue;
    if (layers[l].held)
      for (const int e : slots.at(static_cast<std::size_t>(moe)))
        for (const char* w : kExpertWeights) names.push_back(expert_name(l, e, w));
    ++moe;
  }
  return names;
}

ExpertSlots Model::contiguous_slots(const ModelConfig& c, int ep_rank, int ep_size) {
  EPX_CHECK(ep_size >= 1 && c.num_experts % ep_size == 0 && ep_rank >= 0 && ep_rank < ep_size,
            InvalidArgument, "Model: ep_rank ", ep_rank, " / ep_size ", ep_size,
            " does not split num_experts ", c.num_experts);
  const int El = c.num_experts / ep_size;
  std::vector<int> mine(static_cast<std::size_t>(El));
  for (int j = 0; j < El; ++j) mine[j] = ep_rank * El + j;
  const int moe_layers = std::max(0, c.num_layers - c.first_k_dense);
  return ExpertSlots(static_cast<std::size_t>(moe_layers), mine);
}

std::int64_t Model::parameter_count(const ModelConfig& c) {
  const std::int64_t V = c.vocab_size, H = c.hidden_size, E = c.num_experts;
  const std::int64_t Is = static_cast<std::int64_t>(c.num_shared_experts) * c.moe_intermediate_size;
  std::int64_t n = 2 * V * H + H;  // embedding, head, final norm
  for (int l = 0; l < c.num_layers; ++l) {
    n += 2 * H + 4 * H * H;  // norms, attention
    n += l < c.first_k_dense ? 3 * H * c.intermediate_size
                             : E * H + 3 * H * Is + E * 3 * H * c.moe_intermediate_size;
  }
  return n;
}

Model::Model(const ModelConfig& c, int ep_rank, int ep_size)
    : Model(c, ep_rank, ep_size, contiguous_slots(c, ep_rank, ep_size)) {}

Model::Model(const ModelConfig& c, int ep_rank, int ep_size, ExpertSlots slots, StagePart part)
    : config_(c), ep_rank_(ep_rank), ep_size_(ep_size), part_(part) {
  EPX_CHECK(ep_size >= 1 && ep_rank >= 0 && ep_rank < ep_size, InvalidArgument, "Model: ep_rank ",
            ep_rank, " / ep_size ", ep_size);
  if (part_.last_layer < 0) part_.last_layer = c.num_layers;
  EPX_CHECK(part_.first_layer >= 0 && part_.first_layer <= part_.last_layer &&
                part_.last_layer <= c.num_layers,
            InvalidArgument, "Model: stage layers [", part_.first_layer, ", ", part_.last_layer,
            ") outside [0, ", c.num_layers, "]");
  const std::int64_t V = c.vocab_size, H = c.hidden_size, E = c.num_experts;
  const std::int64_t I = c.intermediate_size, Im = c.moe_intermediate_size;
  const std::int64_t Is = static_cast<std::int64_t>(c.num_shared_experts) * Im;
  if (part_.embed) embed = dense.add("model.embed_tokens.weight", {V, H});
  for (int l = 0; l < c.num_layers; ++l) {
    const std::string p = layer_prefix(l);
    LayerIndex li;
    if (l < part_.first_layer || l >= part_.last_layer) {
      li.held = false;
      li.moe = l >= c.first_k_dense;
      if (li.moe) li.moe_index = num_moe_layers_++;
      layers.push_back(std::move(li));
      continue;
    }
    li.attn_norm = dense.add(p + "input_layernorm.weight", {H});
    li.q = dense.add(p + "self_attn.q_proj.weight", {H, H});
    li.k = dense.add(p + "self_attn.k_proj.weight", {H, H});
    li.v = dense.add(p + "self_attn.v_proj.weight", {H, H});
    li.o = dense.add(p + "self_attn.o_proj.weight", {H, H});
    li.ffn_norm = dense.add(p + "post_attention_layernorm.weight", {H});
    if (l < c.first_k_dense) {
      li.mlp_gate = dense.add(p + "mlp.gate_proj.weight", {I, H});
      li.mlp_up = dense.add(p + "mlp.up_proj.weight", {I, H});
      li.mlp_down = dense.add(p + "mlp.down_proj.weight", {H, I});
    } else {
      li.moe = true;
      li.moe_index = num_moe_layers_++;
      li.router = dense.add(p + "mlp.gate.weight", {E, H});
      if (Is > 0) {
        li.shared_gate = dense.add(p + "mlp.shared_experts.gate_proj.weight", {Is, H});
        li.shared_up = dense.add(p + "mlp.shared_experts.up_proj.weight", {Is, H});
        li.shared_down = dense.add(p + "mlp.shared_experts.down_proj.weight", {H, Is});
      }
    }
    layers.push_back(std::move(li));
  }
  if (part_.head) {
    final_norm = dense.add("model.norm.weight", {H});
    lm_head = dense.add("lm_head.weight", {V, H});
  }
  dense.allocate();
  replace_expert_slots(std::move(slots));
  bias.assign(static_cast<std::size_t>(num_moe_layers_), std::vector<float>(E, 0.0f));
}

ParamStore Model::replace_expert_slots(ExpertSlots slots) {
  const auto L = static_cast<std::size_t>(num_moe_layers_);
  EPX_CHECK(slots.size() == L, InvalidArgument, "Model: a slot table of ", slots.size(),
            " MoE layers, expected ", L);
  const std::size_t S = L > 0 ? slots[0].size() : 0;
  for (std::size_t l = 0; l < L; ++l) {
    EPX_CHECK(slots[l].size() == S && S > 0, InvalidArgument, "Model: MoE layer ", l, " has ",
              slots[l].size(), " expert slots, expected ", S, " (> 0, the same in every layer)");
    for (const int e : slots[l])
      EPX_CHECK(e >= 0 && e < config_.num_experts, InvalidArgument, "Model: MoE layer ", l,
                " slot holds expert ", e, ", outside [0, ", config_.num_experts, ")");
  }
  slots_ = std::move(slots);
  slots_per_rank_ = L > 0 ? static_cast<int>(S) : config_.num_experts / ep_size_;
  ParamStore old = std::move(experts);
  experts = ParamStore();
  declare_experts();
  experts.allocate();
  return old;
}

// A store name is unique: the logical name, with "#slot" appended to a
// second replica of an expert on this rank (expert_names() gives the
// logical names for files and initialisation).
void Model::declare_experts() {
  const std::int64_t H = config_.hidden_size, Im = config_.moe_intermediate_size;
  for (LayerIndex& li : layers) {
    li.expert_gate.clear();
    li.expert_up.clear();
    li.expert_down.clear();
    if (!li.moe || !li.held) continue;
    const std::vector<int>& mine = slots_[static_cast<std::size_t>(li.moe_index)];
    const int l = static_cast<int>(&li - layers.data());
    for (std::size_t j = 0; j < mine.size(); ++j) {
      const bool repeat = std::find(mine.begin(), mine.begin() + j, mine[j]) != mine.begin() + j;
      std::string tag;
      if (repeat) tag.append("#").append(std::to_string(j));
      // In kExpertWeights' order (expert_names() lists them so).
      li.expert_gate.push_back(
          experts.add(expert_name(l, mine[j], kExpertWeights[0]) + tag, {Im, H}));
      li.expert_up.push_back(
          experts.add(expert_name(l, mine[j], kExpertWeights[1]) + tag, {Im, H}));
      li.expert_down.push_back(
          experts.add(expert_name(l, mine[j], kExpertWeights[2]) + tag, {H, Im}));
    }
  }
}

namespace {

// The smallest range holding the given parameters (they are declared together).
std::pair<std::int64_t, std::int64_t> span_of(const ParamStore& store, const std::vector<int>& ids) {
  std::int64_t b = store.size(), e = 0;
  for (const int i : ids) {
    if (i < 0) continue;
    b = std::min(b, store.info(i).offset);
    e = std::max(e, store.info(i).offset + store.info(i).numel);
  }
  return b < e ? std::pair{b, e} : std::pair<std::int64_t, std::int64_t>{0, 0};
}

}  // namespace

std::pair<std::int64_t, std::int64_t> Model::dense_range(int part) const {
  if (part < 0) return span_of(dense, {embed});
  if (part >= static_cast<int>(layers.size())) return span_of(dense, {final_norm, lm_head});
  if (!layers[static_cast<std::size_t>(part)].held) return {0, 0};
  const LayerIndex& l = layers[static_cast<std::size_t>(part)];
  return span_of(dense, {l.attn_norm, l.q, l.k, l.v, l.o, l.ffn_norm, l.mlp_gate, l.mlp_up,
                         l.mlp_down, l.router, l.shared_gate, l.shared_up, l.shared_down});
}

std::pair<std::int64_t, std::int64_t> Model::expert_range(int part) const {
  if (part < 0 || part >= static_cast<int>(layers.size())) return {0, 0};
  const LayerIndex& l = layers[static_cast<std::size_t>(part)];
  std::vector<int> ids = l.expert_gate;
  ids.insert(ids.end(), l.expert_up.begin(), l.expert_up.end());
  ids.insert(ids.end(), l.expert_down.begin(), l.expert_down.end());
  return span_of(experts, ids);
}

namespace {

bool is_output_projection(const std::string& name) {
  const auto ends_with = [&](const char* s) {
    const std::string t = s;
    return name.size() >= t.size() && name.compare(name.size() - t.size(), t.size(), t) == 0;
  };
  return ends_with("o_proj.weight") || ends_with("down_proj.weight");
}

// names[i]: the name parameter i draws its stream from (a replica its
// expert's, so that replicas start identical).
void init_store(ParamStore& store, const std::vector<std::string>& names, std::uint64_t seed,
                double std, double out_std) {
  for (int i = 0; i < static_cast<int>(store.params().size()); ++i) {
    const ParamInfo& p = store.info(i);
    float* v = store.value(i);
    if (p.shape.size() == 1) {
      std::fill(v, v + p.numel, 1.0f);  // norm weights
    } else {
      const std::string& name = names[static_cast<std::size_t>(i)];
      init_normal(v, p.numel, seed, name, is_output_projection(name) ? out_std : std);
    }
  }
}

std::vector<std::string> names_of(const ParamStore& store) {
  std::vector<std::string> names;
  for (const ParamInfo& p : store.params()) names.push_back(p.name);
  return names;
}

}  // namespace

void Model::init_random(std::uint64_t seed) {
  const double std = config_.init_std;
  const double out_std = std / std::sqrt(2.0 * config_.num_layers);
  init_store(dense, names_of(dense), seed, std, out_std);
  init_store(experts, expert_names(), seed, std, out_std);
  for (auto& b : bias) std::fill(b.begin(), b.end(), 0.0f);
}

}  // namespace epx::model
