#include "benchmarks/low_latency_report.hpp"

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <sstream>

namespace epx::bench {

namespace {

double ratio(double a, double b) {
  return b > 0 ? a / b : 0.0;
}
double mib(double bytes) {
  return bytes / (1024.0 * 1024.0);
}
const char* format_name(const LowLatencyReport& r) {
  return r.fp8 ? (r.ue8m0 ? "fp8 e4m3 (ue8m0 scales)" : "fp8 e4m3") : "bf16";
}

}  // namespace

std::size_t deepep_low_latency_bytes(std::int64_t max_tokens_per_rank, std::int64_t hidden,
                                     std::int64_t num_experts) {
  const std::size_t t = static_cast<std::size_t>(max_tokens_per_rank);
  const std::size_t h = static_cast<std::size_t>(hidden);
  const std::size_t e = static_cast<std::size_t>(num_experts);
  const std::size_t scales = h / 128;
  const std::size_t dispatch_msg = 16 + std::max(2 * h, h + 4 * scales);
  const std::size_t combine_msg = 2 * h + 4 * scales;
  const std::size_t send = std::max(t * dispatch_msg, e * t * combine_msg);
  const std::size_t recv = e * t * std::max(dispatch_msg, combine_msg);
  const std::size_t signal = (e * 4 + 127) / 128 * 128;
  const std::size_t total = 2 * (send + recv + signal);
  return (total / 128 + 1) * 128;
}

void print_table(std::ostream& os, const LowLatencyReport& r) {
  std::ostringstream t;
  t << std::fixed;
  t << "epx-bench low-latency: " << r.ranks << " ranks, " << r.tokens << " tokens x " << r.hidden
    << " hidden per rank, top-" << r.topk << " of " << r.experts << " experts, " << format_name(r)
    << ", transport " << r.transport << "\n";
  t << "sent per rank: " << std::setprecision(0) << r.pairs << " (token, expert) pairs x "
    << r.bytes_per_row << " bytes = " << std::setprecision(2) << r.bytes_sent / 1e6
    << " MB in dispatch, " << r.combine_bytes_sent / 1e6 << " MB (bf16) in combine;\n"
    << "  normal mode and MPI_Alltoallv send each token once per rank: " << std::setprecision(0)
    << r.normal_rows << " rows = " << std::setprecision(2) << r.normal_bytes_sent / 1e6
    << " MB in dispatch\n";
  t << "buffer per rank: " << std::setprecision(1) << mib(static_cast<double>(r.buffer_bytes))
    << " MiB (low_latency_size_hint), capacity_bytes() "
    << mib(static_cast<double>(r.capacity_bytes))
    << " MiB; DeepEP's formula for this shape: " << mib(static_cast<double>(r.deepep_bytes))
    << " MiB\n\n";

  t << "                  low-latency us      normal mode us  MPI_Alltoallv us   speed-up vs\n"
    << "                  median      p99           median            median   normal  "
       "MPI_Alltoallv\n";
  auto row = [&](const char* op, double med, double p99, double normal, double base) {
    t << std::left << std::setw(12) << op << std::right << std::setprecision(1) << std::setw(12)
      << med * 1e6 << std::setw(9) << p99 * 1e6 << std::setw(17) << normal * 1e6 << std::setw(18)
      << base * 1e6 << std::setprecision(2) << std::setw(8) << ratio(normal, med) << "x"
      << std::setw(14) << ratio(base, med) << "x\n";
  };
  row("dispatch", r.dispatch_median, r.dispatch_p99, r.normal_dispatch, r.baseline_dispatch);
  row("combine", r.combine_median, r.combine_p99, r.normal_combine, r.baseline_combine);
  t << "normal mode with the caller's work to get the same outputs (rows grouped per expert after\n"
    << "dispatch, gate weights applied before combine):   dispatch " << std::setprecision(1)
    << r.normal_grouped_dispatch * 1e6 << " us (low-latency " << std::setprecision(2)
    << ratio(r.normal_grouped_dispatch, r.dispatch_median) << "x faster), combine "
    << std::setprecision(1) << r.normal_weighted_combine * 1e6 << " us (" << std::setprecision(2)
    << ratio(r.normal_weighted_combine, r.combine_median) << "x)\n";
  if (r.fp8)
    t << std::left << std::setw(12) << "fp8 cast" << std::right << std::setprecision(1)
      << std::setw(12) << r.cast * 1e6
      << "   (per_token_cast_to_fp8 of the T tokens alone: every path does it)\n";
  if (r.hook) {
    const double comm = r.dispatch_median + r.combine_median;
    t << "\nwith hooks, " << std::setprecision(0) << r.compute_us
      << " us of compute after each of dispatch and combine (measured alone: "
      << std::setprecision(1) << r.compute * 1e6 << " us per step):\n";
    t << "  step with hooks (send, compute, hook)   " << std::setw(10) << r.step * 1e6 << " us\n";
    t << "  back to back, no hook (comm + compute)  " << std::setw(10) << r.serial_step * 1e6
      << " us\n";
    t << "  max(comm, compute)                      " << std::setw(10) << r.max_comm_compute * 1e6
      << " us   (comm = dispatch + combine medians = " << comm * 1e6 << " us)\n";
    t << "  step / max(comm, compute)               " << std::setprecision(2) << std::setw(10)
      << ratio(r.step, r.max_comm_compute) << "      step / back to back "
      << ratio(r.step, r.serial_step) << "\n";
  }
  t << "\nTimes: median (and p99) of " << r.iters << " iterations after " << r.warmup
    << " warm-up, each the slowest rank's, all paths\n"
    << "interleaved in the same iterations. normal mode's dispatch includes get_dispatch_layout,\n"
    << "MPI_Alltoallv's its plan() (both need the routing first); its combine reads y in the\n"
    << "buffer (combine_input). Low-latency results were checked bit for bit against a reference\n"
    << "(with and without hooks), normal mode against MPI_Alltoallv, before timing.\n";
  os << t.str();
}

void print_json(std::ostream& os, const LowLatencyReport& r) {
  std::ostringstream j;
  j << std::setprecision(6);
  j << "{\"bench\": \"low-latency\", \"ranks\": " << r.ranks << ", \"tokens\": " << r.tokens
    << ", \"hidden\": " << r.hidden << ", \"topk\": " << r.topk << ", \"experts\": " << r.experts
    << ", \"fp8\": " << (r.fp8 ? "true" : "false")
    << ", \"ue8m0\": " << (r.ue8m0 ? "true" : "false") << ", \"seed\": " << r.seed
    << ", \"warmup\": " << r.warmup << ", \"iters\": " << r.iters << ", \"transport\": \""
    << r.transport << "\", \"dispatch_us_median\": " << r.dispatch_median * 1e6
    << ", \"dispatch_us_p99\": " << r.dispatch_p99 * 1e6
    << ", \"combine_us_median\": " << r.combine_median * 1e6
    << ", \"combine_us_p99\": " << r.combine_p99 * 1e6
    << ", \"normal_dispatch_us\": " << r.normal_dispatch * 1e6
    << ", \"normal_combine_us\": " << r.normal_combine * 1e6
    << ", \"normal_grouped_dispatch_us\": " << r.normal_grouped_dispatch * 1e6
    << ", \"normal_weighted_combine_us\": " << r.normal_weighted_combine * 1e6
    << ", \"speedup_dispatch_vs_normal_grouped\": "
    << ratio(r.normal_grouped_dispatch, r.dispatch_median)
    << ", \"speedup_combine_vs_normal_weighted\": "
    << ratio(r.normal_weighted_combine, r.combine_median)
    << ", \"baseline_dispatch_us\": " << r.baseline_dispatch * 1e6
    << ", \"baseline_combine_us\": " << r.baseline_combine * 1e6
    << ", \"fp8_cast_us\": " << r.cast * 1e6
    << ", \"speedup_dispatch_vs_baseline\": " << ratio(r.baseline_dispatch, r.dispatch_median)
    << ", \"speedup_dispatch_vs_normal\": " << ratio(r.normal_dispatch, r.dispatch_median)
    << ", \"speedup_combine_vs_baseline\": " << ratio(r.baseline_combine, r.combine_median)
    << ", \"speedup_combine_vs_normal\": " << ratio(r.normal_combine, r.combine_median)
    << ", \"bytes_per_row\": " << r.bytes_per_row << ", \"pairs_per_rank\": " << r.pairs
    << ", \"bytes_sent_per_rank\": " << std::llround(r.bytes_sent)
    << ", \"combine_bytes_sent_per_rank\": " << std::llround(r.combine_bytes_sent)
    << ", \"normal_bytes_sent_per_rank\": " << std::llround(r.normal_bytes_sent)
    << ", \"buffer_bytes\": " << r.buffer_bytes << ", \"capacity_bytes\": " << r.capacity_bytes
    << ", \"deepep_buffer_bytes\": " << r.deepep_bytes;
  if (r.hook) {
    j << ", \"compute_us\": " << r.compute_us << ", \"compute_measured_us\": " << r.compute * 1e6
      << ", \"step_us\": " << r.step * 1e6 << ", \"serial_step_us\": " << r.serial_step * 1e6
      << ", \"max_comm_compute_us\": " << r.max_comm_compute * 1e6
      << ", \"step_over_max\": " << ratio(r.step, r.max_comm_compute);
  }
  j << ", \"checked\": true}";
  os << j.str() << "\n";
}

}  // namespace epx::bench
