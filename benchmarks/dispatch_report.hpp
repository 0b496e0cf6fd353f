// Output of `epx-bench dispatch`: a table for people, one JSON object for tools.
#pragma once

#include <cstdint>
#include <ostream>
#include <string>

namespace epx::bench {

struct DispatchReport {
  int ranks = 0;
  std::int64_t tokens = 0;
  std::int64_t hidden = 0;
  int topk = 0;
  int experts = 0;
  bool fp8 = false;
  bool ue8m0 = false;
  std::uint64_t seed = 0;
  int warmup = 0;
  int iters = 0;
  std::string transport;             // epx's transport(s) to the peers
  int nodes = 1;                     // (virtual) nodes of the epx group
  int ranks_per_node = 1;
  std::int64_t bytes_per_token = 0;  // dispatch payload per row, scales included
  double recv_tokens = 0;            // rows received per rank in dispatch, mean over ranks
  double dispatch_bytes = 0;         // payload bytes received per rank in dispatch, mean
  double combine_bytes = 0;          // bf16 bytes received per rank in combine, mean
  // Median seconds per iteration (max over ranks).
  double dispatch_s = 0;
  double combine_s = 0;       // y in the buffer's receive space (combine_input): rows read in place
  double combine_push_s = 0;  // y in the caller's own tensor: rows copied back first
  double baseline_dispatch_s = 0;
  double baseline_combine_s = 0;
  double cast_s = 0;  // with FP8: per_token_cast_to_fp8 of all T tokens, alone
  double copy_s = 0;  // memcpy of dispatch_bytes on all ranks at once
  // Payload bytes one rank sends to other nodes per call, mean over ranks:
  // epx measured by its transport (Buffer::internode_bytes), the baseline
  // counted from its send counts (rows, scales and top-k to every remote rank).
  double internode_dispatch_bytes = 0;
  double internode_combine_bytes = 0;
  double baseline_internode_dispatch_bytes = 0;
  double baseline_internode_combine_bytes = 0;
};

void print_table(std::ostream& os, const DispatchReport& r);
void print_json(std::ostream& os, const DispatchReport& r);

}  // namespace epx::bench
