// The multi-rank tests' input generator: every rank can build every rank's
// inputs (seeded by rank), with rows of very different magnitude (so that
// the order of a sum shows in its bits), -1 slots, tokens without any expert
// and empty ranks.
#pragma once

#include <cstdint>
#include <epx/tensor.hpp>
#include <vector>

#include "tests/support/inputs.hpp"

namespace epx::test {

struct Shape {
  std::vector<std::int64_t> tokens;  // per rank
  std::int64_t hidden = 256;
  int topk = 4;
  int experts = 16;
  DType dtype = DType::bf16;
  double empty_slot = 0.1;  // probability that a top-k slot is -1
  int all_empty_every = 7;  // every n-th token has no expert at all (0: none)
  std::uint32_t seed = 1;
  int ranks() const { return static_cast<int>(tokens.size()); }
};

// `payload_salt` changes x only: the routing stays (for the cached dispatch).
RankInputs make_inputs(const Shape& s, int rank, std::uint32_t payload_salt = 0);

// make_inputs as the references ask for it.
InputsOf inputs_of(const Shape& s, std::uint32_t payload_salt = 0);

}  // namespace epx::test
