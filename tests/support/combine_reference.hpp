// The normal combine's plain-loop reference: what combine must return on
// rank `me`, from every rank's regenerated routing and the caller's rule for
// the expert outputs (each test or benchmark computes its y its own way).
#pragma once

#include <cstdint>
#include <epx/tensor.hpp>
#include <functional>

#include "tests/support/inputs.hpp"

namespace epx::test {

// The expert output that rank `rank` hands to combine for its received row
// `row` (its dispatch result's row index), which is token `token` of rank
// `me`: H f32 values, already rounded to y's dtype (what combine sums).
using ExpertRows = std::function<void(int rank, std::int64_t row, std::int64_t token, float* out)>;

struct CombineReference {
  DType ydtype = DType::bf16;  // y's dtype, and the result's
  // The partial sums of the other nodes cross rounded to y's dtype
  // (CombineOptions::partials_in_input_dtype).
  bool partials_in_input_dtype = false;
};

// [T,H] in ydtype: for each token, the sum over the nodes (ascending) of P_n,
// P_n the sum over the ranks of node n that hold one of its experts
// (ascending) of their outputs; each sum in f32 from +0, rounded once.
// Tokens that went nowhere are zeros. On one node: the plain sum in rank
// order (Topology::flat gives that order on any layout).
Tensor expected_combine(const Topology& topology, int me, const InputsOf& inputs,
                        const ExpertRows& y, const CombineReference& options = {});

}  // namespace epx::test
