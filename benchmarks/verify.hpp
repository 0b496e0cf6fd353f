// Bit-for-bit comparison of results, with a message that names the first
// differing row (and where that row came from) and element.
#pragma once

#include <epx/tensor.hpp>
#include <string>
#include <vector>

#include "benchmarks/reference.hpp"

namespace epx::bench {

// "" when `got` and `want` have the same dtype, shape and bytes; else e.g.
// "epx dispatch x differs from the baseline: row 17 (rank 1, token 33),
// element 5: 0x3f81 vs 0x3f80". `origin` (may be null) names row sources.
std::string compare_tensors(const std::string& what, const Tensor& got, const Tensor& want,
                            const std::vector<RowOrigin>* origin);

std::string compare_counts(const std::string& what, const std::vector<int>& got,
                           const std::vector<int>& want);

// The first non-empty message, or "".
std::string first_error(std::initializer_list<std::string> messages);

}  // namespace epx::bench
