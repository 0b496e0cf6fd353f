// Replica routing (include/epx/balancer.hpp, route_to_replicas): each
// (token, logical expert) pair of a rank to one physical slot, round-robin
// over the expert's replicas on the rank's node, else over all of them.
#include <epx/balancer.hpp>
#include <vector>

#include "core/check.hpp"

namespace epx::balancer {

Tensor route_to_replicas(const Tensor& topk_idx, const Placement& placement,
                         const RoutingTarget& target) {
  const char* const op = "route_to_replicas";
  EPX_CHECK(topk_idx.defined() && topk_idx.device() == Device::cpu &&
                topk_idx.dtype() == DType::i64 && topk_idx.ndim() == 2,
            InvalidArgument, op, ": topk_idx is ",
            topk_idx.defined() ? topk_idx.describe() : "undefined",
            ", expected a host i64 tensor [tokens, k]");
  const Tensor& l2p = placement.log2phy;
  const Tensor& cnt = placement.logcnt;
  EPX_CHECK(l2p.defined() && l2p.dtype() == DType::i64 && l2p.ndim() == 3 && cnt.defined() &&
                cnt.dtype() == DType::i64 && cnt.ndim() == 2 && placement.phy2log.defined() &&
                placement.phy2log.ndim() == 2,
            InvalidArgument, op, ": placement is not one from rebalance_experts");
  const std::int64_t layers = cnt.dim(0), experts = cnt.dim(1), maxcnt = l2p.dim(2);
  const std::int64_t replicas = placement.phy2log.dim(1);
  EPX_CHECK(target.layer >= 0 && target.layer < layers, InvalidArgument, op,
            ": layer = ", target.layer, ", expected 0 <= layer < ", layers);
  EPX_CHECK(target.num_gpus >= 1 && replicas % target.num_gpus == 0, InvalidArgument, op,
            ": num_gpus = ", target.num_gpus, ", expected a divisor of the ", replicas,
            " slots of the placement");
  EPX_CHECK(target.num_nodes >= 1 && target.num_gpus % target.num_nodes == 0, InvalidArgument, op,
            ": num_nodes = ", target.num_nodes,
            ", expected a divisor of num_gpus = ", target.num_gpus);
  EPX_CHECK(target.rank >= 0 && target.rank < target.num_gpus, InvalidArgument, op,
            ": rank = ", target.rank, ", expected 0 <= rank < num_gpus = ", target.num_gpus);

  const std::int64_t slots_per_node = replicas / target.num_nodes;
  const std::int64_t node = target.rank / (target.num_gpus / target.num_nodes);
  const std::int64_t* count = cnt.data<std::int64_t>() + target.layer * experts;
  const std::int64_t* slots = l2p.data<std::int64_t>() + target.layer * experts * maxcnt;

  // Per expert: its candidate slots (a sub-range of its ascending log2phy row:
  // the node's slots are contiguous) and how many pairs it has had so far.
  std::vector<std::int64_t> first(experts), num(experts), seen(experts, 0);
  for (std::int64_t e = 0; e < experts; ++e) {
    const std::int64_t* row = slots + e * maxcnt;
    std::int64_t lo = 0, hi = 0;
    while (lo < count[e] && row[lo] / slots_per_node < node) ++lo;
    hi = lo;
    while (hi < count[e] && row[hi] / slots_per_node == node) ++hi;
    if (hi > lo) {
      first[e] = lo;
      num[e] = hi - lo;
    } else {
      first[e] = 0;
      num[e] = count[e];
    }
  }

  const std::int64_t n = topk_idx.numel(), k = topk_idx.dim(1);
  const std::int64_t* idx = topk_idx.data<std::int64_t>();
  Tensor out = Tensor::empty(topk_idx.shape(), DType::i64);
  std::int64_t* dst = out.data<std::int64_t>();
  for (std::int64_t i = 0; i < n; ++i) {
    const std::int64_t e = idx[i];
    if (e == -1) {
      dst[i] = -1;
      continue;
    }
    EPX_CHECK(e >= 0 && e < experts, InvalidArgument, op, ": topk_idx[", i / k, ",", i % k,
              "] = ", e, ", expected -1 or 0 <= expert < ", experts);
    const std::int64_t pick = (target.rank + seen[e]++) % num[e];
    dst[i] = slots[e * maxcnt + first[e] + pick];
  }
  return out;
}

}  // namespace epx::balancer
