// The plain-loop reference: what each rank must receive from dispatch and get
// back from combine, computed on one rank from every rank's regenerated input,
// sharing no code with either the baseline or epx (but the FP8 kernel, which
// has its own tests).
#pragma once

#include <cstdint>
#include <epx/tensor.hpp>
#include <utility>
#include <vector>

#include "benchmarks/alltoallv_dispatcher.hpp"
#include "benchmarks/workload.hpp"

namespace epx::bench {

struct RowOrigin {
  int rank = 0;            // source rank
  std::int64_t token = 0;  // token index on the source rank
};

struct Expected {
  // dispatch: rows ordered by source rank, then token
  Tensor x;             // [M,H] bf16, or e4m3 with fp8
  Tensor x_scales;      // [M,H/128] f32 with fp8
  Tensor topk_idx;      // [M,K] i64 local ids
  Tensor topk_weights;  // [M,K] f32
  std::vector<int> num_recv_tokens_per_expert;
  std::vector<RowOrigin> origin;  // per received row
  // combine of make_combine_input(received x) on every rank: [T,H] bf16
  Tensor combined;
};

// One source rank's regenerated input and its payload as sent (cast to FP8
// with options.fp8: e4m3 rows and f32 scales; else the bf16 rows).
struct SourceRows {
  Workload input;
  Tensor payload;
  Tensor scales;  // undefined without fp8
};
SourceRows source_rows(const WorkloadSpec& spec, int rank, const BaselineOptions& options);

Expected compute_expected(const WorkloadSpec& spec, int rank, int ranks,
                          const BaselineOptions& options);

}  // namespace epx::bench
