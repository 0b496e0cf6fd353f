// Bit-for-bit comparison of results, with a message that names the first
// differing row (and where that row came from), element and bits. Messages,
// not assertions: a multi-rank caller agrees on the verdict (or takes part in
// the next collective) before it fails.
#pragma once

#include <cstdint>
#include <epx/tensor.hpp>
#include <initializer_list>
#include <string>
#include <vector>

namespace epx::test {

// Where a received row came from: it names the row in a failure message.
struct RowOrigin {
  int rank = 0;            // source rank
  std::int64_t token = 0;  // token index on the source rank
};

// "" when `got` and `want` have the same dtype, shape and bytes; else e.g.
// "epx dispatch x differs from the baseline: row 17 (rank 1, token 33),
// element 5: 0x3f81 vs 0x3f80". `origin` (may be null) names row sources.
std::string compare_tensors(const std::string& what, const Tensor& got, const Tensor& want,
                            const std::vector<RowOrigin>* origin = nullptr);

std::string compare_counts(const std::string& what, const std::vector<int>& got,
                           const std::vector<int>& want);

// The first non-empty message, or "".
std::string first_error(std::initializer_list<std::string> messages);

}  // namespace epx::test
