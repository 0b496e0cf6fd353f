// The plain-loop reference of low-latency mode: what each local expert must
// receive from low_latency_dispatch, and what low_latency_combine must return,
// computed on one rank from every rank's regenerated input. It shares no code
// with epx but the FP8 kernel (which has its own tests).
#pragma once

#include <cstdint>
#include <epx/tensor.hpp>
#include <vector>

#include "benchmarks/alltoallv_dispatcher.hpp"
#include "benchmarks/reference.hpp"
#include "benchmarks/workload.hpp"

namespace epx::bench {

struct LowLatencyExpected {
  // Per local expert: its rows, ordered by source rank, then source token.
  std::vector<Tensor> x;         // [count, H] bf16, or e4m3 with fp8
  std::vector<Tensor> x_scales;  // [count, H/128] f32 with fp8
  std::vector<std::vector<RowOrigin>> origin;
  std::vector<int> count;
  // low_latency_combine of make_low_latency_combine_input(received x) on every
  // rank: for token t, acc = 0.0f; for k ascending with idx >= 0:
  // acc = acc + w * float(y); rounded once to bf16. [T,H] bf16.
  Tensor combined;
};

LowLatencyExpected compute_low_latency_expected(const WorkloadSpec& spec, int rank, int ranks,
                                                const BaselineOptions& options);

}  // namespace epx::bench
