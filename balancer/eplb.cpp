#include "balancer/eplb.hpp"

#include <algorithm>
#include <numeric>

namespace epx::balancer::detail {

Packing eplb_pack(const float* weight, int n, int num_packs) {
  const int per_pack = n / num_packs;
  Packing out;
  out.pack.assign(n, -1);
  out.rank_in_pack.assign(n, 0);
  if (per_pack == 1) {
    std::iota(out.pack.begin(), out.pack.end(), 0);
    return out;
  }
  std::vector<int> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return weight[a] > weight[b]; });
  std::vector<float> pack_weight(num_packs, 0.0f);
  std::vector<int> pack_items(num_packs, 0);
  for (int item : order) {
    int best = -1;
    for (int p = 0; p < num_packs; ++p) {
      if (pack_items[p] == per_pack) continue;
      if (best < 0 || pack_weight[p] < pack_weight[best]) best = p;
    }
    out.pack[item] = best;
    out.rank_in_pack[item] = pack_items[best]++;
    pack_weight[best] += weight[item];
  }
  return out;
}

Packing eplb_groups_to_nodes(const float* layer_load, const Shape& shape) {
  const int groups = shape.used_groups();
  const int group_size = shape.experts / groups;
  std::vector<float> group_load(groups, 0.0f);
  for (int g = 0; g < groups; ++g) {
    for (int j = 0; j < group_size; ++j) group_load[g] += layer_load[g * group_size + j];
  }
  return eplb_pack(group_load.data(), groups, shape.used_nodes());
}

namespace {

// Replicas of n experts in num_slots slots: slot i < n holds expert i; each
// further slot goes to the first expert with the largest load per replica.
struct Replication {
  std::vector<int> slot_expert;  // [num_slots]
  std::vector<int> count;        // [n]
};
Replication eplb_replicate(const float* weight, int n, int num_slots) {
  Replication r;
  r.slot_expert.resize(num_slots);
  std::iota(r.slot_expert.begin(), r.slot_expert.begin() + n, 0);
  r.count.assign(n, 1);
  for (int slot = n; slot < num_slots; ++slot) {
    int best = 0;
    float best_load = weight[0] / static_cast<float>(r.count[0]);
    for (int e = 1; e < n; ++e) {
      const float per_replica = weight[e] / static_cast<float>(r.count[e]);
      if (per_replica > best_load) {
        best = e;
        best_load = per_replica;
      }
    }
    r.slot_expert[slot] = best;
    ++r.count[best];
  }
  return r;
}

}  // namespace

void eplb_layer(const float* layer_load, const Shape& shape, std::int64_t* phy2log) {
  const int nodes = shape.used_nodes();
  const int groups_per_node = shape.used_groups() / nodes;
  const int group_size = shape.experts / shape.used_groups();
  const int experts_per_node = shape.experts / nodes;
  const int slots_per_node = shape.replicas / nodes;
  const int gpus_per_node = shape.gpus / nodes;
  const int slots_per_gpu = shape.slots_per_gpu();

  // 1. Groups to nodes. Node n's experts, in EPLB's order: its groups by
  // arrival, each group's experts ascending.
  const Packing group_node = eplb_groups_to_nodes(layer_load, shape);
  std::vector<int> node_expert(shape.experts);  // node-major position -> logical expert
  for (int g = 0; g < shape.used_groups(); ++g) {
    const int first =
        (group_node.pack[g] * groups_per_node + group_node.rank_in_pack[g]) * group_size;
    for (int j = 0; j < group_size; ++j) node_expert[first + j] = g * group_size + j;
  }

  std::vector<float> local_load(experts_per_node);
  std::vector<float> replica_load(slots_per_node);
  for (int node = 0; node < nodes; ++node) {
    const int* experts = node_expert.data() + node * experts_per_node;
    for (int k = 0; k < experts_per_node; ++k) local_load[k] = layer_load[experts[k]];

    // 2. Replicas within the node.
    const Replication rep = eplb_replicate(local_load.data(), experts_per_node, slots_per_node);

    // 3. Replicas to the node's GPUs, by load per replica.
    for (int i = 0; i < slots_per_node; ++i) {
      const int k = rep.slot_expert[i];
      replica_load[i] = local_load[k] / static_cast<float>(rep.count[k]);
    }
    const Packing gpu = eplb_pack(replica_load.data(), slots_per_node, gpus_per_node);
    std::int64_t* out = phy2log + static_cast<std::int64_t>(node) * slots_per_node;
    for (int i = 0; i < slots_per_node; ++i) {
      out[gpu.pack[i] * slots_per_gpu + gpu.rank_in_pack[i]] = experts[rep.slot_expert[i]];
    }
  }
}

}  // namespace epx::balancer::detail
