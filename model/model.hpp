// The MoE transformer's parameters: a pre-norm decoder of num_layers layers
// (attention, then a dense SwiGLU FFN in the first first_k_dense layers and
// an MoE FFN in the others), with DeepSeek-V3's HF tensor names. The dense
// parameters (replicated on every data-parallel rank) and the routed experts
// this rank holds are two ParamStores. docs/train.md gives every formula.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "model/model_config.hpp"
#include "model/params.hpp"

namespace epx::model {

// Indices of one layer's parameters in Model::dense (and, for routed
// experts, Model::experts). -1 where the layer has none.
struct LayerIndex {
  bool held = true;  // false: another pipeline stage holds this layer (every index -1)
  bool moe = false;
  int moe_index = -1;  // among the MoE layers: bias and expert counts
  int attn_norm = -1, q = -1, k = -1, v = -1, o = -1, ffn_norm = -1;
  int mlp_gate = -1, mlp_up = -1, mlp_down = -1;  // dense FFN
  int router = -1;                                 // mlp.gate.weight [E,H]
  int shared_gate = -1, shared_up = -1, shared_down = -1;
  std::vector<int> expert_gate, expert_up, expert_down;  // per local expert, in Model::experts
};

// The logical expert each local slot of a rank holds, per MoE layer:
// [MoE layer][local slot]. Every rank of an EP group has the same number of
// slots; a logical expert may sit in several slots (replicas, on several
// ranks or, rarely, twice on one).
using ExpertSlots = std::vector<std::vector<int>>;

// What one pipeline stage holds: layers [first_layer, last_layer) (-1: to
// the end), the embedding (the first stage) and the final norm and LM head
// (the last). The default is the whole model.
struct StagePart {
  int first_layer = 0;
  int last_layer = -1;
  bool embed = true;
  bool head = true;
};

class Model {
 public:
  // This rank holds the routed experts [ep_rank * E/ep_size, (ep_rank+1) * E/ep_size).
  Model(const ModelConfig& config, int ep_rank, int ep_size);
  // This rank holds `slots` (a balancer placement's share of this rank; a
  // row for every MoE layer of the model, held or not) of `part`.
  Model(const ModelConfig& config, int ep_rank, int ep_size, ExpertSlots slots,
        StagePart part = {});
  // Without a placement: EP rank `ep_rank` holds [ep_rank E/ep_size, ...), in order.
  static ExpertSlots contiguous_slots(const ModelConfig& config, int ep_rank, int ep_size);
  // The whole model's parameters (each expert once), whatever the grid.
  static std::int64_t parameter_count(const ModelConfig& config);

  const ModelConfig& config() const noexcept { return config_; }
  int num_moe_layers() const noexcept { return num_moe_layers_; }  // of the whole model
  const StagePart& part() const noexcept { return part_; }         // last_layer resolved
  int ep_rank() const noexcept { return ep_rank_; }
  int ep_size() const noexcept { return ep_size_; }
  int local_experts() const noexcept { return slots_per_rank_; }  // slots per MoE layer
  const ExpertSlots& expert_slots() const noexcept { return slots_; }

  // Rebuilds the experts store for a new slot table (same slots per layer on
  // every rank, any count); the values and moments of the new store are
  // zero. Returns the old store, for the caller to copy from.
  ParamStore replace_expert_slots(ExpertSlots slots);

  // Random initialisation from `seed` (params.hpp): matrices normal(0, init_std),
  // o_proj and down_proj normal(0, init_std / sqrt(2 L)), norms 1, biases 0.
  void init_random(std::uint64_t seed);

  // "model.layers.{i}.mlp.gate.e_score_correction_bias" of MoE layer `moe_index`.
  std::string bias_name(int moe_index) const;
  // HF name of expert `e` (logical)'s weight `which` ("gate_proj", ...) in `layer`.
  static std::string expert_name(int layer, int e, const char* which);
  // The logical HF names of the parameters of an `experts` store holding
  // `slots`, in store order: gate, up, down of each slot (a replica repeats
  // its expert's names). The layout is the same on every rank of the group.
  std::vector<std::string> expert_names(const ExpertSlots& slots) const;
  std::vector<std::string> expert_names() const { return expert_names(slots_); }

  // [begin, end) floats of part `part` (as Engine::set_backward_hook numbers
  // them: num_layers = the head, 0..L-1 the layers, -1 the embedding) in the
  // dense store, and in the experts store (empty for parts without experts).
  std::pair<std::int64_t, std::int64_t> dense_range(int part) const;
  std::pair<std::int64_t, std::int64_t> expert_range(int part) const;

  ParamStore dense;    // replicated over data-parallel ranks
  ParamStore experts;  // this rank's routed experts
  std::vector<std::vector<float>> bias;  // [MoE layer][E]: the selection bias b (a buffer)
  std::vector<LayerIndex> layers;
  int embed = -1, final_norm = -1, lm_head = -1;

 private:
  void declare_experts();
  ModelConfig config_;
  int ep_rank_ = 0, ep_size_ = 1;
  int num_moe_layers_ = 0;
  StagePart part_;
  ExpertSlots slots_;
  int slots_per_rank_ = 0;
};

}  // namespace epx::model
