#include <epx/balancer.hpp>

#include "python/bindings.hpp"
#include "python/torch_tensor.hpp"

namespace epx::python {

namespace py = pybind11;
using namespace py::literals;
namespace bal = epx::balancer;

namespace {

bal::Policy parse_policy(const std::string& name) {
  if (name == "balanced") return bal::Policy::balanced;
  if (name == "eplb") return bal::Policy::eplb;
  throw Error(ErrorCode::InvalidArgument, "policy is '" + name + "', expected 'balanced' or 'eplb'");
}

py::tuple placement_tuple(const bal::Placement& p) {
  return py::make_tuple(to_torch(p.phy2log), to_torch(p.log2phy), to_torch(p.logcnt));
}

bal::Placement placement_of(const py::object& phy2log, const py::object& log2phy, const py::object& logcnt,
                            std::vector<TorchArg>& keep) {
  keep = {from_torch(phy2log, "phy2log"), from_torch(log2phy, "log2phy"), from_torch(logcnt, "logcnt")};
  for (const TorchArg& a : keep)
    if (!a.problem.empty()) throw Error(ErrorCode::InvalidArgument, a.problem);
  return {keep[0].tensor, keep[1].tensor, keep[2].tensor};
}

}  // namespace

// The pure placement functions (no communication); epx/balancer.py gives
// them EPLB's Python signature.
void register_balancer(py::module_& parent) {
  py::module_ m = parent.def_submodule("balancer", "epx::balancer: expert placement");
  m.def(
      "rebalance_experts",
      [](const py::object& weight, int num_replicas, int num_groups, int num_nodes, int num_gpus,
         const std::string& policy) {
        TorchArg w = from_torch(weight, "weight");
        if (!w.problem.empty()) throw Error(ErrorCode::InvalidArgument, w.problem);
        bal::Policy p = parse_policy(policy);
        bal::Placement out = [&] {
          py::gil_scoped_release unlocked;
          return bal::rebalance_experts(w.tensor, num_replicas, num_groups, num_nodes, num_gpus, p);
        }();
        return placement_tuple(out);
      },
      "weight"_a, "num_replicas"_a, "num_groups"_a, "num_nodes"_a, "num_gpus"_a, "policy"_a = "balanced");
  m.def(
      "evaluate_placement",
      [](const py::object& weight, const py::object& phy2log, const py::object& log2phy,
         const py::object& logcnt, int num_gpus) {
        TorchArg w = from_torch(weight, "weight");
        if (!w.problem.empty()) throw Error(ErrorCode::InvalidArgument, w.problem);
        std::vector<TorchArg> keep;
        bal::PlacementQuality q = bal::evaluate_placement(w.tensor, placement_of(phy2log, log2phy, logcnt, keep),
                                                          num_gpus);
        return py::make_tuple(q.gpu_max_over_mean, q.same_gpu_duplicates);
      },
      "weight"_a, "phy2log"_a, "log2phy"_a, "logcnt"_a, "num_gpus"_a);
  m.def(
      "route_to_replicas",
      [](const py::object& topk_idx, const py::object& phy2log, const py::object& log2phy,
         const py::object& logcnt, int layer, int rank, int num_gpus, int num_nodes) {
        TorchArg idx = from_torch(topk_idx, "topk_idx");
        if (!idx.problem.empty()) throw Error(ErrorCode::InvalidArgument, idx.problem);
        std::vector<TorchArg> keep;
        bal::Placement p = placement_of(phy2log, log2phy, logcnt, keep);
        return to_torch(bal::route_to_replicas(idx.tensor, p, {layer, rank, num_gpus, num_nodes}));
      },
      "topk_idx"_a, "phy2log"_a, "log2phy"_a, "logcnt"_a, "layer"_a, "rank"_a, "num_gpus"_a,
      "num_nodes"_a = 1);
}

}  // namespace epx::python
