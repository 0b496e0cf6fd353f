// The normal dispatch's plain-loop reference: what rank `me` must receive,
// computed on one rank from every rank's regenerated inputs, sharing no code
// with epx but the FP8 cast (which has its own tests).
#pragma once

#include <cstdint>
#include <epx/tensor.hpp>
#include <vector>

#include "tests/support/compare.hpp"
#include "tests/support/inputs.hpp"

namespace epx::test {

// Rows ordered by source rank, then source token: each token once per rank
// that holds at least one of its experts.
struct ExpectedDispatch {
  Tensor x;             // [M,H] the payload (payload_of)
  Tensor x_scales;      // [M,H/128] f32 with fp8, else undefined
  Tensor topk_idx;      // [M,K] i64 local expert ids, -1 for the other ranks' experts
  Tensor topk_weights;  // [M,K] f32, 0 where topk_idx is -1
  std::vector<int> num_recv_tokens_per_expert;  // per local expert, rounded up to the alignment
  std::vector<RowOrigin> origin;                // per row
  std::int64_t rows() const { return static_cast<std::int64_t>(origin.size()); }
};

ExpectedDispatch expected_dispatch(const Topology& topology, int me, const InputsOf& inputs,
                                   const PayloadFormat& format, int alignment = 1);

}  // namespace epx::test
