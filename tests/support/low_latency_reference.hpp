// The plain-loop reference of low-latency mode: what each local expert of
// rank `me` must receive from low_latency_dispatch, and what
// low_latency_combine must return, from every rank's regenerated inputs. It
// shares no code with epx but the FP8 cast (which has its own tests).
#pragma once

#include <cstdint>
#include <epx/comm.hpp>
#include <epx/tensor.hpp>
#include <functional>
#include <string>
#include <vector>

#include "tests/support/compare.hpp"
#include "tests/support/inputs.hpp"

namespace epx::test {

struct LowLatencyExpected {
  DType dtype = DType::bf16;  // of the payload: e4m3 with fp8
  std::int64_t hidden = 0;
  // Per local expert: its rows, ordered by source rank, then source token.
  std::vector<int> count;
  std::vector<Tensor> x;         // [count,H]
  std::vector<Tensor> x_scales;  // [count,H/128] f32 with fp8, else empty
  std::vector<std::vector<RowOrigin>> origin;
};

LowLatencyExpected expected_low_latency_dispatch(const Topology& topology, int me,
                                                 const InputsOf& inputs,
                                                 const PayloadFormat& format);

// "" when a dispatch result (after its hook) holds the expected rows: shapes
// [E_local, slots, H], counts, then rows 0..count-1 of each expert bit for
// bit (the rest is free space); else the first problem.
std::string compare_low_latency_dispatch(const std::string& what,
                                         const comm::LowLatencyDispatchResult& got,
                                         const LowLatencyExpected& want, std::int64_t slots);

// The expert output that global expert `expert` hands to combine for row
// `row` of its list (rows ordered as dispatch delivers them), which is token
// `token` of rank `me`: H f32 values, already rounded to y's dtype.
using ExpertSlotRows =
    std::function<void(std::int64_t expert, std::int64_t row, std::int64_t token, float* out)>;

// [T,H] in ydtype: for token t, acc = +0; acc = acc + w_k * y_k over its valid
// k ascending (an f32 product, then an f32 add); rounded once.
Tensor expected_low_latency_combine(const Topology& topology, int me, const InputsOf& inputs,
                                    const ExpertSlotRows& y, DType ydtype);

}  // namespace epx::test
