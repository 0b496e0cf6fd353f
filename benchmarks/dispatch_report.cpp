#include "benchmarks/dispatch_report.hpp"

#include <iomanip>
#include <sstream>

namespace epx::bench {

namespace {

double gbps(double bytes, double seconds) { return seconds > 0 ? bytes / seconds / 1e9 : 0.0; }
double ratio(double a, double b) { return b > 0 ? a / b : 0.0; }

struct Derived {
  double dispatch_gbps, combine_gbps, baseline_dispatch_gbps, baseline_combine_gbps, copy_gbps;
  double combine_push_gbps;
};

Derived derive(const DispatchReport& r) {
  return Derived{gbps(r.dispatch_bytes, r.dispatch_s), gbps(r.combine_bytes, r.combine_s),
                 gbps(r.dispatch_bytes, r.baseline_dispatch_s),
                 gbps(r.combine_bytes, r.baseline_combine_s), gbps(r.dispatch_bytes, r.copy_s),
                 gbps(r.combine_bytes, r.combine_push_s)};
}

}  // namespace

void print_table(std::ostream& os, const DispatchReport& r) {
  const Derived d = derive(r);
  std::ostringstream t;
  t << std::fixed;
  t << "epx-bench dispatch: " << r.ranks << " ranks, " << r.tokens << " tokens x " << r.hidden
    << " hidden per rank, top-" << r.topk << " of " << r.experts << " experts, "
    << (r.fp8 ? (r.ue8m0 ? "fp8 e4m3 (ue8m0 scales)" : "fp8 e4m3") : "bf16") << ", transport "
    << r.transport << "\n";
  if (r.nodes > 1) {
    t << "across " << r.nodes << " nodes of " << r.ranks_per_node
      << " ranks: bytes sent to other nodes per rank (dispatch / combine): epx " << std::setprecision(2)
      << r.internode_dispatch_bytes / 1e6 << " / " << r.internode_combine_bytes / 1e6
      << " MB, MPI_Alltoallv " << r.baseline_internode_dispatch_bytes / 1e6 << " / "
      << r.baseline_internode_combine_bytes / 1e6 << " MB (" << std::setprecision(0)
      << 100.0 * ratio(r.internode_dispatch_bytes, r.baseline_internode_dispatch_bytes) << " % / "
      << 100.0 * ratio(r.internode_combine_bytes, r.baseline_internode_combine_bytes) << " %)\n"
      << "inter-node GB/s per rank (dispatch / combine): epx " << std::setprecision(3)
      << gbps(r.internode_dispatch_bytes, r.dispatch_s) << " / "
      << gbps(r.internode_combine_bytes, r.combine_s) << ", MPI_Alltoallv "
      << gbps(r.baseline_internode_dispatch_bytes, r.baseline_dispatch_s) << " / "
      << gbps(r.baseline_internode_combine_bytes, r.baseline_combine_s) << "\n";
  }
  t << "received per rank: " << std::setprecision(0) << r.recv_tokens << " tokens x "
    << r.bytes_per_token << " bytes = " << std::setprecision(2) << r.dispatch_bytes / 1e6
    << " MB in dispatch, " << r.combine_bytes / 1e6 << " MB (bf16) in combine\n\n";
  t << "                     epx us  epx GB/s  MPI_Alltoallv us  GB/s  speed-up  epx/copy ceiling\n";
  auto row = [&](const char* op, double s, double g, double base_s, double base_g) {
    t << std::left << std::setw(16) << op << std::right << std::setprecision(1) << std::setw(11)
      << s * 1e6 << std::setprecision(2) << std::setw(10) << g << std::setprecision(1)
      << std::setw(18) << base_s * 1e6 << std::setprecision(2) << std::setw(6) << base_g
      << std::setw(9) << ratio(base_s, s) << "x" << std::setprecision(0) << std::setw(16)
      << 100.0 * ratio(g, d.copy_gbps) << " %\n";
  };
  row("dispatch", r.dispatch_s, d.dispatch_gbps, r.baseline_dispatch_s, d.baseline_dispatch_gbps);
  row("combine", r.combine_s, d.combine_gbps, r.baseline_combine_s, d.baseline_combine_gbps);
  row("combine (own y)", r.combine_push_s, d.combine_push_gbps, r.baseline_combine_s,
      d.baseline_combine_gbps);
  t << std::left << std::setw(16) << "copy" << std::right << std::setprecision(1) << std::setw(11)
    << r.copy_s * 1e6 << std::setprecision(2) << std::setw(10) << d.copy_gbps
    << "   (memcpy of the dispatch bytes, all ranks at once: the ceiling)\n";
  if (r.fp8)
    t << std::left << std::setw(16) << "fp8 cast" << std::right << std::setprecision(1)
      << std::setw(11) << r.cast_s * 1e6
      << "             (per_token_cast_to_fp8 of the T tokens alone: both dispatchers do it)\n";
  t << "\n";
  t << "GB/s: payload bytes received per rank / time (as DeepEP counts). Times: median of "
    << r.iters << " iterations\nafter " << r.warmup
    << " warm-up, each the slowest rank's. Results were checked bit for bit against the\n"
    << "MPI_Alltoallv baseline and a reference before timing. combine: y in the buffer\n"
    << "(Buffer::combine_input), read in place; combine (own y): y in a separate tensor.\n";
  os << t.str();
}

void print_json(std::ostream& os, const DispatchReport& r) {
  const Derived d = derive(r);
  std::ostringstream j;
  j << std::setprecision(6);
  j << "{\"bench\": \"dispatch\", \"ranks\": " << r.ranks << ", \"tokens\": " << r.tokens
    << ", \"hidden\": " << r.hidden << ", \"topk\": " << r.topk << ", \"experts\": " << r.experts
    << ", \"fp8\": " << (r.fp8 ? "true" : "false")
    << ", \"ue8m0\": " << (r.ue8m0 ? "true" : "false") << ", \"seed\": " << r.seed
    << ", \"warmup\": " << r.warmup << ", \"iters\": " << r.iters << ", \"transport\": \""
    << r.transport << "\", \"bytes_per_token\": " << r.bytes_per_token
    << ", \"recv_tokens_per_rank\": " << r.recv_tokens
    << ", \"dispatch_us\": " << r.dispatch_s * 1e6 << ", \"combine_us\": " << r.combine_s * 1e6
    << ", \"dispatch_GBps\": " << d.dispatch_gbps << ", \"combine_GBps\": " << d.combine_gbps
    << ", \"combine_push_us\": " << r.combine_push_s * 1e6
    << ", \"combine_push_GBps\": " << d.combine_push_gbps
    << ", \"speedup_combine_push\": " << ratio(r.baseline_combine_s, r.combine_push_s)
    << ", \"baseline_dispatch_us\": " << r.baseline_dispatch_s * 1e6
    << ", \"baseline_combine_us\": " << r.baseline_combine_s * 1e6
    << ", \"baseline_dispatch_GBps\": " << d.baseline_dispatch_gbps
    << ", \"baseline_combine_GBps\": " << d.baseline_combine_gbps
    << ", \"copy_GBps\": " << d.copy_gbps << ", \"fp8_cast_us\": " << r.cast_s * 1e6
    << ", \"speedup_dispatch\": " << ratio(r.baseline_dispatch_s, r.dispatch_s)
    << ", \"speedup_combine\": " << ratio(r.baseline_combine_s, r.combine_s)
    << ", \"dispatch_copy_fraction\": " << ratio(d.dispatch_gbps, d.copy_gbps)
    << ", \"combine_copy_fraction\": " << ratio(d.combine_gbps, d.copy_gbps)
    << ", \"nodes\": " << r.nodes << ", \"ranks_per_node\": " << r.ranks_per_node
    << ", \"internode_bytes_per_rank\": " << r.internode_dispatch_bytes
    << ", \"baseline_internode_bytes_per_rank\": " << r.baseline_internode_dispatch_bytes
    << ", \"combine_internode_bytes_per_rank\": " << r.internode_combine_bytes
    << ", \"baseline_combine_internode_bytes_per_rank\": " << r.baseline_internode_combine_bytes
    << ", \"internode_GBps\": " << gbps(r.internode_dispatch_bytes, r.dispatch_s)
    << ", \"combine_internode_GBps\": " << gbps(r.internode_combine_bytes, r.combine_s)
    << ", \"baseline_internode_GBps\": "
    << gbps(r.baseline_internode_dispatch_bytes, r.baseline_dispatch_s)
    << ", \"baseline_combine_internode_GBps\": "
    << gbps(r.baseline_internode_combine_bytes, r.baseline_combine_s)
    << ", \"checked\": true}";
  os << j.str() << "\n";
}

}  // namespace epx::bench
