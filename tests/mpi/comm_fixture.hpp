// Shared set-up of the multi-rank comm tests.
#pragma once

#include <gtest/gtest.h>

#include <memory>

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

// Compares n elements, reporting the first mismatch with its row.
template <class T>
void expect_rows_equal(const T* got, const T* want, std::int64_t rows, std::int64_t cols,
                       const char* what) {
  for (std::int64_t i = 0; i < rows * cols; ++i) {
    if (std::memcmp(&got[i], &want[i], sizeof(T)) != 0) {
      ADD_FAILURE() << what << " differs at row " << i / cols << ", column " << i % cols
                    << " (rank " << world().rank() << ")";
      return;
    }
  }
}

}  // namespace epx::test
