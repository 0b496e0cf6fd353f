#include "train/expert_balancer.hpp"

#include <algorithm>
#include <cstring>
#include <utility>

#include "core/agree.hpp"
#include "core/check.hpp"
#include "core/config.hpp"
#include "core/stopwatch.hpp"

namespace epx::train {

namespace {

constexpr int kTagGather = 7301;   // replica gradients to the expert's first holder
constexpr int kTagScatter = 7302;  // the sums back

// The nodes a placement over `group` may assume: rebalance_experts and
// route_to_replicas put GPU g on node g / (G / nodes), so the group's nodes
// must be equal blocks of consecutive ranks; otherwise plan as one node.
int placement_nodes(const Group& group) {
  const int G = group.size(), N = group.num_nodes();
  if (N <= 1 || G % N != 0) return 1;
  for (int r = 0; r < G; ++r)
    if (group.node_of(r) != r / (G / N)) return 1;
  return N;
}

// The MoE layers' indices in Model::layers, by moe_index.
std::vector<const model::LayerIndex*> moe_layers(const model::Model& m) {
  std::vector<const model::LayerIndex*> out(static_cast<std::size_t>(m.num_moe_layers()));
  for (const model::LayerIndex& li : m.layers)
    if (li.moe) out[static_cast<std::size_t>(li.moe_index)] = &li;
  return out;
}

// Local slot i of a MoE layer is one contiguous span of the experts store
// (gate, up, down, declared together).
std::int64_t slot_offset(const model::Model& m, const model::LayerIndex& li, int i) {
  return m.experts.info(li.expert_gate[static_cast<std::size_t>(i)]).offset;
}

// The MoE layers (moe_index) this model holds, ascending.
std::vector<int> held_moe_layers(const model::Model& m) {
  std::vector<int> out;
  for (const model::LayerIndex& li : m.layers)
    if (li.moe && li.held) out.push_back(li.moe_index);
  return out;
}

// Rows `rows` of a placement, as a placement of those layers.
balancer::Placement rows_of(const balancer::Placement& p, const std::vector<int>& rows) {
  const auto pick = [&](const Tensor& t) {
    std::vector<std::int64_t> shape = t.shape();
    const std::int64_t row = t.numel() / shape[0];
    shape[0] = static_cast<std::int64_t>(rows.size());
    Tensor out = Tensor::empty(shape, DType::i64);
    for (std::size_t i = 0; i < rows.size(); ++i)
      std::copy(t.data<std::int64_t>() + rows[i] * row,
                t.data<std::int64_t>() + (rows[i] + 1) * row,
                out.data<std::int64_t>() + static_cast<std::int64_t>(i) * row);
    return out;
  };
  return {pick(p.phy2log), pick(p.log2phy), pick(p.logcnt)};
}

std::int64_t slot_floats(const model::ModelConfig& c) {
  return 3 * static_cast<std::int64_t>(c.hidden_size) * c.moe_intermediate_size;
}

}  // namespace

ExpertBalancer::ExpertBalancer(const Config& config, Group& world, Group& ep_group,
                               const Comm& ep_comm, bool moments)
    : ep_group_(ep_group),
      ep_comm_(ep_comm),
      tracker_(world, std::max(0, config.model.num_layers - config.model.first_k_dense),
               config.model.num_experts, config.balancer.window),
      policy_(config.balancer.policy == "eplb" ? balancer::Policy::eplb
                                               : balancer::Policy::balanced) {
  const model::ModelConfig& m = config.model;
  num_slots_ = m.num_experts + config.balancer.redundant_experts;
  num_groups_ = m.n_group;
  // Every EP group must hold the same placement (their slots' gradients are
  // summed position by position), so all plan for the same node count: the
  // least any group may assume.
  num_nodes_ = core::allreduce_int(world.comm(), placement_nodes(ep_group), MPI_MIN,
                                   core::Deadline(core::params::timeout_s.get()),
                                   "epx-train: agreeing on the balancer's nodes");
  every_ = config.balancer.every;
  moments_ = moments;
  incremental_ = config.balancer.policy == "incremental";
  incremental_options_.max_migration = config.balancer.max_migration;
  timeout_s_ = core::params::timeout_s.get();
  const int L = std::max(0, m.num_layers - m.first_k_dense);
  Tensor uniform = Tensor::empty({L, m.num_experts}, DType::i64);
  std::fill(uniform.data<std::int64_t>(), uniform.data<std::int64_t>() + uniform.numel(), 1);
  placement_ = balancer::rebalance_experts(uniform, num_slots_, num_groups_, num_nodes_,
                                           ep_group.size(), policy_);
}

model::ExpertSlots ExpertBalancer::slots_of(int ep_rank) const {
  return slots_of(placement_, ep_rank);
}

model::ExpertSlots ExpertBalancer::slots_of(const balancer::Placement& placement,
                                            int ep_rank) const {
  const std::int64_t L = placement.phy2log.dim(0), P = placement.phy2log.dim(1);
  const std::int64_t S = P / ep_group_.size();
  const std::int64_t* p2l = placement.phy2log.data<std::int64_t>();
  model::ExpertSlots slots(static_cast<std::size_t>(L));
  for (std::int64_t l = 0; l < L; ++l)
    for (std::int64_t i = 0; i < S; ++i)
      slots[l].push_back(static_cast<int>(p2l[l * P + ep_rank * S + i]));
  return slots;
}

int ExpertBalancer::first_slot(int moe, int expert) const {
  const std::int64_t E = placement_.log2phy.dim(1), C = placement_.log2phy.dim(2);
  return static_cast<int>(placement_.log2phy.data<std::int64_t>()[(moe * E + expert) * C]);
}

void ExpertBalancer::observe(const std::vector<std::vector<std::int64_t>>& counts) {
  for (std::size_t l = 0; l < counts.size(); ++l) {
    std::vector<std::int64_t> c = counts[l];
    tracker_.add(static_cast<int>(l),
                 Tensor::wrap(c.data(), {static_cast<std::int64_t>(c.size())}, DType::i64));
  }
  tracker_.end_step();
}

RebalanceReport ExpertBalancer::rebalance(const std::vector<model::Model*>& models,
                                          std::int64_t step) {
  const auto t0 = core::SteadyClock::now();
  const int G = ep_group_.size();
  RebalanceReport r;
  r.step = step;
  const Tensor load = tracker_.load();
  const balancer::Placement target =
      incremental_ ? balancer::rebalance_experts(load, placement_, num_groups_, num_nodes_, G,
                                                 incremental_options_)
                   : balancer::rebalance_experts(load, num_slots_, num_groups_, num_nodes_, G, policy_);
  const balancer::Placement eplb = balancer::rebalance_experts(
      load, num_slots_, num_groups_, num_nodes_, G, balancer::Policy::eplb);
  r.before = balancer::evaluate_placement(load, placement_, G).gpu_max_over_mean;
  r.eplb = balancer::evaluate_placement(load, eplb, G).gpu_max_over_mean;
  // match_slots works layer by layer, so every stage computes the same
  // adopted rows whichever layers it migrates.
  const balancer::Placement adopted = balancer::match_slots(placement_, target, G);

  // Each model (a pipeline chunk) migrates the MoE layers it holds, the
  // chunks in the same order on every rank of the EP group.
  for (model::Model* model : models) {
    const std::vector<int> held = held_moe_layers(*model);
    if (held.empty()) continue;
    const std::vector<const model::LayerIndex*> layers = moe_layers(*model);
    const std::int64_t n = slot_floats(model->config());
    model::ParamStore& X = model->experts;
    std::vector<std::vector<balancer::SlotTensors>> weights;
    for (const int l : held) {
      weights.emplace_back();
      for (int i = 0; i < model->local_experts(); ++i) {
        const std::int64_t off = slot_offset(*model, *layers[l], i);
        balancer::SlotTensors t{Tensor::wrap(X.values.data() + off, {n}, DType::f32)};
        if (moments_) {
          t.push_back(Tensor::wrap(X.exp_avg.data() + off, {n}, DType::f32));
          t.push_back(Tensor::wrap(X.exp_avg_sq.data() + off, {n}, DType::f32));
        }
        weights.back().push_back(std::move(t));
      }
    }
    balancer::Migration mig =
        balancer::migrate_experts(ep_group_, rows_of(placement_, held), rows_of(target, held),
                                  std::move(weights), timeout_s_);
    r.moved_bytes += mig.stats.moved_bytes;
    r.naive_bytes += mig.stats.naive_bytes;

    // The new store, filled from the migration's tensors (views of the old
    // store among them: it lives until the copy is done).
    const model::ParamStore old = model->replace_expert_slots(slots_of(adopted, ep_group_.rank()));
    const std::vector<const model::LayerIndex*> relaid = moe_layers(*model);
    for (std::size_t h = 0; h < held.size(); ++h)
      for (int i = 0; i < model->local_experts(); ++i) {
        const std::int64_t off = slot_offset(*model, *relaid[held[h]], i);
        const balancer::SlotTensors& t = mig.weights[h][static_cast<std::size_t>(i)];
        std::memcpy(X.values.data() + off, t[0].data<float>(), sizeof(float) * n);
        if (!moments_) continue;  // the new store's moments stay zero
        std::memcpy(X.exp_avg.data() + off, t[1].data<float>(), sizeof(float) * n);
        std::memcpy(X.exp_avg_sq.data() + off, t[2].data<float>(), sizeof(float) * n);
      }
  }
  placement_ = adopted;
  r.after = balancer::evaluate_placement(load, placement_, G).gpu_max_over_mean;
  r.seconds = core::seconds_since(t0);
  return r;
}

void ExpertBalancer::sum_replica_gradients(model::Model& model) const {
  const int G = ep_group_.size(), me = ep_group_.rank();
  const int S = model.local_experts();
  const std::int64_t n = slot_floats(model.config());
  const std::int64_t E = placement_.log2phy.dim(1), C = placement_.log2phy.dim(2);
  const std::int64_t* l2p = placement_.log2phy.data<std::int64_t>();
  const std::int64_t* cnt = placement_.logcnt.data<std::int64_t>();
  const std::vector<const model::LayerIndex*> layers = moe_layers(model);
  float* grads = model.experts.grads.data();
  const auto grad_of = [&](std::size_t l, std::int64_t slot) {
    return grads + slot_offset(model, *layers[l], static_cast<int>(slot % S));
  };

  // Phase 1: every replica not on its expert's first holder goes there, one
  // message per (holder, first holder) pair, in (layer, expert, slot) order.
  // Only the layers this model holds (the EP group's stage).
  std::vector<std::vector<float>> gather_out(G), gather_in(G), scatter_out(G), scatter_in(G);
  for (std::size_t l = 0; l < layers.size(); ++l)
    for (std::int64_t e = 0; e < E && layers[l]->held; ++e) {
      const std::int64_t c = cnt[l * E + e];
      const std::int64_t* slots = l2p + (l * E + e) * C;
      const int lead = static_cast<int>(slots[0] / S);
      bool mine = false;
      for (std::int64_t j = 0; j < c; ++j) {
        const int q = static_cast<int>(slots[j] / S);
        mine = mine || q == me;
        if (q == lead) continue;
        if (me == lead) gather_in[q].resize(gather_in[q].size() + n);
        if (me == q)
          gather_out[lead].insert(gather_out[lead].end(), grad_of(l, slots[j]),
                                  grad_of(l, slots[j]) + n);
      }
      if (mine && me != lead && c > 1) scatter_in[lead].resize(scatter_in[lead].size() + n);
    }
  const auto exchange = [&](std::vector<std::vector<float>>& out,
                            std::vector<std::vector<float>>& in, int tag, const char* phase) {
    std::vector<MPI_Request> req;
    std::vector<int> peers;
    for (int q = 0; q < G; ++q) {
      if (!in[q].empty()) {
        req.emplace_back();
        MPI_Irecv(in[q].data(), static_cast<int>(in[q].size()), MPI_FLOAT, q, tag, ep_comm_.get(),
                  &req.back());
        peers.push_back(q);
      }
      if (!out[q].empty()) {
        req.emplace_back();
        MPI_Isend(out[q].data(), static_cast<int>(out[q].size()), MPI_FLOAT, q, tag, ep_comm_.get(),
                  &req.back());
        peers.push_back(q);
      }
    }
    wait_all(ep_comm_, req, peers, phase);
  };
  exchange(gather_out, gather_in, kTagGather, "summing the replicas' expert gradients (gather)");

  // The first holder sums in slot order, keeps the sum in its slots and
  // sends it once to every other holder.
  std::vector<std::size_t> taken(G, 0);
  std::vector<float> acc(static_cast<std::size_t>(n));
  for (std::size_t l = 0; l < layers.size(); ++l)
    for (std::int64_t e = 0; e < E && layers[l]->held; ++e) {
      const std::int64_t c = cnt[l * E + e];
      const std::int64_t* slots = l2p + (l * E + e) * C;
      if (c < 2 || slots[0] / S != me) continue;
      std::copy(grad_of(l, slots[0]), grad_of(l, slots[0]) + n, acc.begin());
      for (std::int64_t j = 1; j < c; ++j) {
        const int q = static_cast<int>(slots[j] / S);
        const float* g = q == me ? grad_of(l, slots[j]) : gather_in[q].data() + taken[q];
        if (q != me) taken[q] += static_cast<std::size_t>(n);
        for (std::int64_t x = 0; x < n; ++x) acc[x] += g[x];
      }
      int last = me;
      for (std::int64_t j = 0; j < c; ++j) {
        const int q = static_cast<int>(slots[j] / S);
        if (q == me) {
          std::copy(acc.begin(), acc.end(), grad_of(l, slots[j]));
        } else if (q != last) {
          scatter_out[q].insert(scatter_out[q].end(), acc.begin(), acc.end());
        }
        last = q;
      }
    }
  exchange(scatter_out, scatter_in, kTagScatter,
           "summing the replicas' expert gradients (scatter)");

  // The other holders take the sums, in the order the first holders sent them.
  std::fill(taken.begin(), taken.end(), 0);
  for (std::size_t l = 0; l < layers.size(); ++l)
    for (std::int64_t e = 0; e < E && layers[l]->held; ++e) {
      const std::int64_t c = cnt[l * E + e];
      const std::int64_t* slots = l2p + (l * E + e) * C;
      const int lead = static_cast<int>(slots[0] / S);
      if (c < 2 || lead == me) continue;
      const float* sum = nullptr;
      for (std::int64_t j = 0; j < c; ++j) {
        if (slots[j] / S != me) continue;
        if (!sum) {
          sum = scatter_in[lead].data() + taken[lead];
          taken[lead] += static_cast<std::size_t>(n);
        }
        std::copy(sum, sum + n, grad_of(l, slots[j]));
      }
    }
}

double ExpertBalancer::grad_sq_sum(const model::Model& model) const {
  const int S = model.local_experts(), me = ep_group_.rank();
  const std::int64_t n = slot_floats(model.config());
  const std::vector<const model::LayerIndex*> layers = moe_layers(model);
  double s = 0;
  for (std::size_t l = 0; l < layers.size(); ++l)
    for (int i = 0; i < S && layers[l]->held; ++i) {
      const int e = model.expert_slots()[l][static_cast<std::size_t>(i)];
      if (first_slot(static_cast<int>(l), e) != me * S + i) continue;
      const float* g = model.experts.grads.data() + slot_offset(model, *layers[l], i);
      for (std::int64_t x = 0; x < n; ++x) s += static_cast<double>(g[x]) * g[x];
    }
  return s;
}

}  // namespace epx::train
