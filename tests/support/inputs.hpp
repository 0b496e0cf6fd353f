// What a rank hands to dispatch, and who holds which expert: the terms in
// which every reference here is written. The references never receive the
// inputs of all ranks at once; they ask for one rank's when they need it, so
// that each caller keeps its own generator (the tests' make_inputs, the
// benchmark's workload) and no rank holds every rank's tokens in memory.
#pragma once

#include <cstdint>
#include <epx/tensor.hpp>
#include <functional>
#include <vector>

namespace epx {
class Group;
}

namespace epx::test {

struct RankInputs {
  Tensor x;             // [T,H] bf16 or f32
  Tensor topk_idx;      // [T,K] i64, -1: no expert
  Tensor topk_weights;  // [T,K] f32
};

// Any rank's inputs, regenerated on demand (seeded by rank).
using InputsOf = std::function<RankInputs(int rank)>;

// Rank r of R holds experts [r*E/R, (r+1)*E/R); node_of[r] is its node. The
// combine reference sums node by node, so the node layout is part of it.
struct Topology {
  std::vector<int> node_of;  // per rank
  int experts = 0;           // E, a multiple of the rank count

  int ranks() const { return static_cast<int>(node_of.size()); }
  int experts_per_rank() const { return experts / ranks(); }
  int num_nodes() const;
  // R ranks on one node: sums in plain rank order.
  static Topology flat(int ranks, int experts);
  static Topology of(const Group& group, int experts);
};

// How dispatch sends x: cast to e4m3 with per-token 1x128 f32 scales (scales
// rounded up to powers of two with ue8m0), or as it is.
struct PayloadFormat {
  bool fp8 = false;
  bool ue8m0 = false;
};

struct Payload {
  Tensor x;       // [T,H]: e4m3 with fp8, else the input's dtype
  Tensor scales;  // [T,H/128] f32 with fp8, else undefined
};

// Through the library's own cast (which has its own tests): the bytes a
// correct dispatch delivers.
Payload payload_of(const Tensor& x, const PayloadFormat& format);

}  // namespace epx::test
