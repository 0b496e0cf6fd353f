// The comm tests' inputs and dispatch reference: the test-support library's
// (tests/support), fed with make_inputs. What is the tests' own is the
// expert output they compute from a received row.
#pragma once

#include <cstdint>
#include <epx/epx.hpp>

#include "tests/support/compare.hpp"
#include "tests/support/dispatch_reference.hpp"
#include "tests/support/random_inputs.hpp"
#include "tests/support/rounding.hpp"

namespace epx::test {

// What rank `me` must receive from a dispatch of make_inputs(s, ., salt);
// fp8: payload cast with per_token_cast_to_fp8(ue8m0).
inline ExpectedDispatch expected_dispatch(const Shape& s, int me, bool fp8, bool ue8m0,
                                          int alignment, std::uint32_t salt = 0) {
  return expected_dispatch(Topology::flat(s.ranks(), s.experts), me, inputs_of(s, salt),
                           PayloadFormat{fp8, ue8m0}, alignment);
}

// The expert output a test computes on rank `r` for a received row: a
// deterministic function of the row, so the source can predict it.
inline float expert_output(float x, int r, std::int64_t h) {
  return x * static_cast<float>(r + 1) + 0.25f * static_cast<float>(h % 3);
}

}  // namespace epx::test
