// Output of `epx-bench low-latency`: a table for people, one JSON object for
// tools; and DeepEP's buffer size for the same shape, to compare memory.
#pragma once

#include <cstddef>
#include <cstdint>
#include <ostream>
#include <string>

namespace epx::bench {

// Bytes of RDMA buffer per rank that DeepEP's low-latency mode asks for
// (deep_ep.Buffer.get_low_latency_rdma_size_hint, csrc/config.hpp): two halves,
// each a send buffer max(T*d, E*T*c), a receive buffer E*T*max(d, c) and
// E*4 signalling bytes (aligned to 128), where a dispatch message is
// d = 16 + max(2H, H + 4*H/128) and a combine message c = 2H + 4*H/128; the
// total rounded up past a multiple of 128. It does not depend on the rank count.
std::size_t deepep_low_latency_bytes(std::int64_t max_tokens_per_rank, std::int64_t hidden,
                                     std::int64_t num_experts);

struct LowLatencyReport {
  int ranks = 0;
  std::int64_t tokens = 0;
  std::int64_t hidden = 0;
  int topk = 0;
  int experts = 0;
  bool fp8 = true;
  bool ue8m0 = false;
  std::uint64_t seed = 0;
  int warmup = 0;
  int iters = 0;
  std::string transport;  // of the low-latency buffer

  // Per rank, means over ranks.
  std::int64_t bytes_per_row = 0;  // dispatch payload per (token, expert) pair, scales included
  double pairs = 0;                // valid (token, expert) pairs sent in dispatch
  double bytes_sent = 0;           // pairs * bytes_per_row
  double combine_bytes_sent = 0;   // bf16 rows sent back in combine
  double normal_rows = 0;          // normal mode: tokens sent, once per destination rank
  double normal_bytes_sent = 0;
  std::size_t buffer_bytes = 0;    // Buffer::low_latency_size_hint
  std::size_t capacity_bytes = 0;  // Buffer::capacity_bytes() of the low-latency buffer
  std::size_t deepep_bytes = 0;

  // Seconds, each iteration's slowest rank.
  double dispatch_median = 0, dispatch_p99 = 0;
  double combine_median = 0, combine_p99 = 0;
  double normal_dispatch = 0, normal_combine = 0;  // medians; dispatch includes get_dispatch_layout
  // Normal mode plus the caller's work to get low-latency's outputs: rows
  // grouped per local expert after dispatch; gate weights applied before combine.
  double normal_grouped_dispatch = 0, normal_weighted_combine = 0;
  double baseline_dispatch = 0, baseline_combine = 0;  // medians; dispatch includes plan()
  double cast = 0;  // with fp8: per_token_cast_to_fp8 of the T tokens alone

  // With --hook.
  bool hook = false;
  double compute_us = 0;        // asked for, per phase
  double compute = 0;           // both phases' compute alone, measured
  double step = 0;              // dispatch(hook), compute, hook, combine(hook), compute, hook
  double serial_step = 0;       // dispatch, compute, combine, compute (no hook)
  double max_comm_compute = 0;  // max(dispatch + combine, compute)
};

void print_table(std::ostream& os, const LowLatencyReport& r);
void print_json(std::ostream& os, const LowLatencyReport& r);

}  // namespace epx::bench
