// The public entry points: check the input, run the policy layer by layer,
// and lay the result out as the three tensors of a Placement.
#include <algorithm>
#include <epx/balancer.hpp>

#include "balancer/balanced.hpp"
#include "balancer/eplb.hpp"
#include "balancer/problem.hpp"
#include "balancer/score.hpp"
#include "core/check.hpp"
#include "core/log.hpp"

namespace epx::balancer {

using detail::Shape;
using detail::assemble;

const char* policy_name(Policy policy) noexcept {
  switch (policy) {
    case Policy::balanced:
      return "balanced";
    case Policy::eplb:
      return "eplb";
  }
  return "unknown";
}

Placement rebalance_experts(const Tensor& load, int num_replicas, int num_groups, int num_nodes,
                            int num_gpus, Policy policy) {
  EPX_CHECK(policy == Policy::balanced || policy == Policy::eplb, InvalidArgument,
            "rebalance_experts: policy = ", static_cast<int>(policy),
            ", expected Policy::balanced or Policy::eplb");
  const Shape s = detail::check_problem(load, num_replicas, num_groups, num_nodes, num_gpus);
  const std::vector<float> load_f32 = detail::load_as<float>(load);
  Tensor phy2log = Tensor::empty({s.layers, s.replicas}, DType::i64);
  std::int64_t* out = phy2log.data<std::int64_t>();

  // Both policies start from EPLB's placement: balanced keeps it where it
  // finds nothing better.
  std::vector<std::int64_t> eplb(s.replicas);
  std::vector<double> load_f64;
  if (policy == Policy::balanced) load_f64 = detail::load_as<double>(load);
  for (int l = 0; l < s.layers; ++l) {
    const float* row = load_f32.data() + static_cast<std::size_t>(l) * s.experts;
    std::int64_t* dst = out + static_cast<std::int64_t>(l) * s.replicas;
    if (policy == Policy::eplb) {
      detail::eplb_layer(row, s, dst);
      continue;
    }
    detail::eplb_layer(row, s, eplb.data());
    detail::balanced_layer(load_f64.data() + static_cast<std::size_t>(l) * s.experts, row, s,
                           eplb.data(), dst);
  }
  EPX_LOG(Debug, Balancer, "rebalance_experts: ", s.layers, " layers, ", s.experts, " experts -> ",
          s.replicas, " slots on ", num_gpus, " GPUs of ", num_nodes, " nodes (",
          policy == Policy::eplb ? "eplb" : "balanced", ")");
  return assemble(std::move(phy2log), s);
}

PlacementQuality evaluate_placement(const Tensor& load, const Placement& placement, int num_gpus) {
  const char* const op = "evaluate_placement";
  EPX_CHECK(placement.phy2log.defined() && placement.phy2log.dtype() == DType::i64 &&
                placement.phy2log.ndim() == 2,
            InvalidArgument, op, ": phy2log is ",
            placement.phy2log.defined() ? placement.phy2log.describe() : "undefined",
            ", expected i64 [layers, replicas]");
  const std::int64_t replicas = placement.phy2log.dim(1);
  // The load checks of rebalance_experts, with any grouping (1 group, 1 node).
  const Shape s = detail::check_problem(load, static_cast<int>(replicas), 1, 1, num_gpus);
  EPX_CHECK_EQ(placement.phy2log.dim(0), static_cast<std::int64_t>(s.layers), InvalidArgument, op,
               ": phy2log layers vs load layers");
  const std::int64_t* p2l = placement.phy2log.data<std::int64_t>();
  for (std::int64_t i = 0; i < placement.phy2log.numel(); ++i) {
    EPX_CHECK(p2l[i] >= 0 && p2l[i] < s.experts, InvalidArgument, op, ": phy2log[", i / replicas,
              ",", i % replicas, "] = ", p2l[i], ", expected 0 <= expert < ", s.experts);
  }
  const std::vector<double> w = detail::load_as<double>(load);
  PlacementQuality q;
  std::vector<int> scratch;
  for (int l = 0; l < s.layers; ++l) {
    const detail::LayerScore score =
        detail::score_layer(w.data() + static_cast<std::size_t>(l) * s.experts, s.experts,
                            p2l + l * replicas, s.replicas, s.gpus, scratch);
    q.gpu_max_over_mean.push_back(score.max_over_mean());
    q.same_gpu_duplicates.push_back(score.duplicates);
  }
  return q;
}

}  // namespace epx::balancer
