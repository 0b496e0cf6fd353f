#include "balancer/problem.hpp"

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "core/check.hpp"

namespace epx::balancer::detail {

namespace {

// The first bad value of a load row-major matrix, reported with its index.
template <class T>
void check_values(const T* v, std::int64_t layers, std::int64_t experts) {
  for (std::int64_t l = 0; l < layers; ++l) {
    for (std::int64_t e = 0; e < experts; ++e) {
      const T x = v[l * experts + e];
      bool ok = x >= 0;  // false for NaN too
      if constexpr (std::is_floating_point_v<T>) ok = ok && std::isfinite(x);
      EPX_CHECK(ok, InvalidArgument, "rebalance_experts: load[", l, ",", e, "] = ", x,
                ", expected a finite value >= 0");
    }
  }
}

}  // namespace

Shape check_problem(const Tensor& load, int num_replicas, int num_groups, int num_nodes,
                    int num_gpus) {
  EPX_CHECK(load.defined(), InvalidArgument, "rebalance_experts: load is undefined");
  EPX_CHECK(load.device() == Device::cpu, InvalidArgument, "rebalance_experts: load is ",
            load.describe(), ", expected a host tensor");
  EPX_CHECK(load.dtype() == DType::i64 || load.dtype() == DType::f32, InvalidArgument,
            "rebalance_experts: load is ", load.describe(), ", expected dtype i64 or f32");
  EPX_CHECK(load.ndim() == 2, InvalidArgument, "rebalance_experts: load is ", load.describe(),
            ", expected 2 dims [layers, experts]");
  EPX_CHECK(load.dim(0) >= 1 && load.dim(1) >= 1, InvalidArgument, "rebalance_experts: load is ",
            load.describe(), ", expected at least one layer and one expert");
  EPX_CHECK(load.dim(0) <= INT32_MAX && load.dim(1) <= INT32_MAX, InvalidArgument,
            "rebalance_experts: load is ", load.describe(), ", too large");
  EPX_CHECK_GE(num_groups, 1, InvalidArgument, "rebalance_experts");
  EPX_CHECK_GE(num_nodes, 1, InvalidArgument, "rebalance_experts");
  EPX_CHECK_GE(num_gpus, 1, InvalidArgument, "rebalance_experts");

  Shape s;
  s.layers = static_cast<int>(load.dim(0));
  s.experts = static_cast<int>(load.dim(1));
  s.replicas = num_replicas;
  s.groups = num_groups;
  s.nodes = num_nodes;
  s.gpus = num_gpus;
  s.hierarchical = num_groups % num_nodes == 0;

  EPX_CHECK(s.experts % num_groups == 0, InvalidArgument,
            "rebalance_experts: num_experts = ", s.experts,
            " (load.dim(1)) is not a multiple of num_groups = ", num_groups);
  EPX_CHECK(num_gpus % num_nodes == 0, InvalidArgument, "rebalance_experts: num_gpus = ", num_gpus,
            " is not a multiple of num_nodes = ", num_nodes);
  EPX_CHECK(num_replicas >= s.experts, InvalidArgument,
            "rebalance_experts: num_replicas = ", num_replicas,
            ", expected >= num_experts = ", s.experts, " (every expert needs a replica)");
  EPX_CHECK(num_replicas % num_gpus == 0, InvalidArgument,
            "rebalance_experts: num_replicas = ", num_replicas,
            " is not a multiple of num_gpus = ", num_gpus);

  if (load.dtype() == DType::i64)
    check_values(load.data<std::int64_t>(), s.layers, s.experts);
  else
    check_values(load.data<float>(), s.layers, s.experts);
  return s;
}

template <class T>
std::vector<T> load_as(const Tensor& load) {
  const std::int64_t n = load.numel();
  std::vector<T> out(static_cast<std::size_t>(n));
  if (load.dtype() == DType::i64) {
    const std::int64_t* v = load.data<std::int64_t>();
    for (std::int64_t i = 0; i < n; ++i) out[i] = static_cast<T>(v[i]);
  } else {
    const float* v = load.data<float>();
    for (std::int64_t i = 0; i < n; ++i) out[i] = static_cast<T>(v[i]);
  }
  return out;
}

template std::vector<double> load_as<double>(const Tensor&);
template std::vector<float> load_as<float>(const Tensor&);

// phy2log [L,P] -> logcnt [L,E] and log2phy [L,E,maxcnt] (slots ascending).
Placement assemble(Tensor phy2log, const Shape& s) {
  Placement out;
  out.phy2log = std::move(phy2log);
  const std::int64_t* p2l = out.phy2log.data<std::int64_t>();
  out.logcnt = Tensor::zeros({s.layers, s.experts}, DType::i64);
  std::int64_t* cnt = out.logcnt.data<std::int64_t>();
  for (std::int64_t i = 0; i < static_cast<std::int64_t>(s.layers) * s.replicas; ++i) {
    ++cnt[(i / s.replicas) * s.experts + p2l[i]];
  }
  const std::int64_t maxcnt = *std::max_element(cnt, cnt + out.logcnt.numel());
  out.log2phy = Tensor::empty({s.layers, s.experts, maxcnt}, DType::i64);
  std::int64_t* l2p = out.log2phy.data<std::int64_t>();
  std::fill(l2p, l2p + out.log2phy.numel(), std::int64_t{-1});
  std::vector<std::int64_t> filled(s.experts);
  for (int l = 0; l < s.layers; ++l) {
    std::fill(filled.begin(), filled.end(), 0);
    for (int p = 0; p < s.replicas; ++p) {
      const std::int64_t e = p2l[static_cast<std::int64_t>(l) * s.replicas + p];
      l2p[(static_cast<std::int64_t>(l) * s.experts + e) * maxcnt + filled[e]++] = p;
    }
  }
  return out;
}


}  // namespace epx::balancer::detail
