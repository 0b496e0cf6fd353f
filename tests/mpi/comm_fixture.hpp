// Shared set-up of the multi-rank comm tests.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "comm_reference.hpp"
#include "core/wait.hpp"

namespace epx::test {

using comm::DispatchResult;

inline Group& world() {
  static Group g(MPI_COMM_WORLD);
  return g;
}

// Tokens per rank: base + 3*rank, with the ranks listed in `empty` at 0.
inline std::vector<std::int64_t> tokens_per_rank(std::int64_t base, std::vector<int> empty = {}) {
  std::vector<std::int64_t> t(static_cast<std::size_t>(world().size()));
  for (int r = 0; r < world().size(); ++r) t[r] = base + 3 * r;
  for (int r : empty)
    if (r < world().size()) t[r] = 0;
  return t;
}

// Experts: a multiple of the group size, not a power of two when possible.
inline int experts_for(int per_rank) { return per_rank * world().size(); }

// Bit-for-bit equality (dtype, shape, bytes); a failure names the first
// differing row (its source when `origin` is given), element and bits. An
// EXPECT: the caller still reaches the next collective.
inline void expect_same(const std::string& what, const Tensor& got, const Tensor& want,
                        const std::vector<RowOrigin>* origin = nullptr) {
  const std::string diff = compare_tensors(what, got, want, origin);
  EXPECT_TRUE(diff.empty()) << diff << " (rank " << world().rank() << ")";
}

}  // namespace epx::test
