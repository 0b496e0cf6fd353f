// The shape of a placement problem, checked once, and the load matrix in the
// two precisions the policies need.
#pragma once

#include <cstdint>
#include <vector>

#include <epx/balancer.hpp>
#include <epx/tensor.hpp>

namespace epx::balancer::detail {

struct Shape {
  int layers = 0;    // L
  int experts = 0;   // E
  int replicas = 0;  // P, physical slots per layer
  int groups = 0;    // expert groups as given (used when hierarchical)
  int nodes = 0;     // nodes as given (used when hierarchical)
  int gpus = 0;
  bool hierarchical = false;  // groups % nodes == 0

  // The groups and nodes the placement actually uses: global placement is a
  // hierarchical one with one group and one node.
  int used_groups() const { return hierarchical ? groups : 1; }
  int used_nodes() const { return hierarchical ? nodes : 1; }
  int slots_per_gpu() const { return replicas / gpus; }
};

// Validates the arguments of rebalance_experts (InvalidArgument naming the
// argument and the value) and returns the shape.
Shape check_problem(const Tensor& load, int num_replicas, int num_groups, int num_nodes,
                    int num_gpus);

// load [L,E] (i64 or f32, already checked), row-major, as T: double (exact
// for f32, the nearest double for i64; what quality is measured in) or float
// (the precision EPLB computes in; i64 rounds to nearest).
template <class T>
std::vector<T> load_as(const Tensor& load);

// phy2log [L,P] (values in [0,E), every expert present) -> the Placement
// with logcnt [L,E] and log2phy [L,E,maxcnt] (slots ascending). Uses s.layers,
// s.experts and s.replicas only.
Placement assemble(Tensor phy2log, const Shape& s);

}  // namespace epx::balancer::detail
