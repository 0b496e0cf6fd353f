// `epx-bench dispatch`: epx's normal-mode dispatch and combine beside the
// MPI_Alltoallv dispatcher, on the same random tokens in the same run. Both
// are checked bit for bit (against each other and a plain-loop reference)
// before anything is timed.
#include <cstdint>
#include <epx/comm.hpp>
#include <epx/group.hpp>
#include <epx/kernels.hpp>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "benchmarks/alltoallv_dispatcher.hpp"
#include "benchmarks/buffer_util.hpp"
#include "benchmarks/collective.hpp"
#include "benchmarks/combine_input.hpp"
#include "benchmarks/dispatch_report.hpp"
#include "benchmarks/options.hpp"
#include "benchmarks/registry.hpp"
#include "benchmarks/report_output.hpp"
#include "benchmarks/timing.hpp"
#include "benchmarks/workload.hpp"
#include "tests/support/combine_reference.hpp"
#include "tests/support/compare.hpp"
#include "tests/support/dispatch_reference.hpp"

namespace epx::bench {

namespace {

using test::compare_counts;
using test::compare_tensors;
using test::first_error;

const char* const kSummary =
    "dispatch + combine of random tokens: epx vs an MPI_Alltoallv dispatcher, checked bit for bit";

OptionSet make_options() {
  OptionSet o("dispatch");
  o.add_int("tokens", 2048, 0, std::int64_t{1} << 24, "tokens per rank (T)");
  o.add_int("hidden", 2048, 1, std::int64_t{1} << 20,
            "hidden size (H); a multiple of 128 with --fp8");
  o.add_int("topk", 8, 1, 1024, "experts per token (K)");
  o.add_int("experts", 64, 1, std::int64_t{1} << 20, "experts (E), a multiple of the rank count");
  o.add_flag("fp8", "e4m3 payload with per-token 1x128 f32 scales, cast inside dispatch");
  o.add_flag("ue8m0", "with --fp8: scales rounded up to powers of two");
  o.add_int("warmup", 3, 0, 1000000, "untimed iterations before each measurement");
  o.add_int("iters", 10, 1, 1000000, "timed iterations; the median is reported");
  o.add_int("seed", 1, 0, INT64_MAX, "random seed (each rank derives its own streams)");
  o.add_int("ranks-per-node", 0, 0, 1 << 20,
            "split the ranks into virtual nodes of this many (inter-node traffic through the\n"
            "MPI-3 RMA transport); 0: EPX_RANKS_PER_NODE, else the hosts");
  o.add_flag("bf16-partials",
             "across nodes, time combine with its per-node partial sums crossing in bf16\n"
             "(y's dtype) instead of f32: half the bytes, one more rounding per node (checked\n"
             "bit for bit against the reference rounded the same way)");
  o.add_flag("wide-y",
             "combine an f32 y whose rows differ by up to 2^24 and in sign (not a bf16 y in\n"
             "[1, 2) x): its f32 sums round, so the order of each sum shows in the bits\n"
             "(checked: node by node for epx across nodes, rank by rank for the baseline)");
  o.add_flag("json", "print one JSON object instead of the table");
  o.add_flag("check-only", "check the results (epx, baseline, reference) and stop; no timing");
  return o;
}

struct Config {
  WorkloadSpec spec;
  BaselineOptions format;
  Repeat repeat;
  int ranks_per_node = 0;
  bool bf16_partials = false;
  YSpec y;
  bool json = false;
  bool check_only = false;
};

Config parse_config(MPI_Comm comm, const std::vector<std::string>& args) {
  OptionSet o = make_options();
  o.parse(args);
  Config c;
  c.spec.tokens = o.get_int("tokens");
  c.spec.hidden = o.get_int("hidden");
  c.spec.topk = static_cast<int>(o.get_int("topk"));
  c.spec.experts = static_cast<int>(o.get_int("experts"));
  c.spec.seed = static_cast<std::uint64_t>(o.get_int("seed"));
  c.format.fp8 = o.flag("fp8");
  c.format.ue8m0 = o.flag("ue8m0");
  c.repeat.warmup = static_cast<int>(o.get_int("warmup"));
  c.repeat.iters = static_cast<int>(o.get_int("iters"));
  c.ranks_per_node = static_cast<int>(o.get_int("ranks-per-node"));
  c.bf16_partials = o.flag("bf16-partials");
  c.y.wide = o.flag("wide-y");
  c.json = o.flag("json");
  c.check_only = o.flag("check-only");

  const int ranks = comm_size(comm);
  auto bad = [](const std::string& why) { throw UsageError("epx-bench dispatch: " + why); };
  if (c.spec.topk > c.spec.experts)
    bad("--topk " + std::to_string(c.spec.topk) + " exceeds --experts " +
        std::to_string(c.spec.experts));
  if (c.spec.experts % ranks != 0)
    bad("--experts " + std::to_string(c.spec.experts) + " is not a multiple of the " +
        std::to_string(ranks) + " ranks");
  if (c.format.fp8 && c.spec.hidden % 128 != 0)
    bad("--hidden " + std::to_string(c.spec.hidden) + " with --fp8: expected a multiple of 128");
  if (c.format.ue8m0 && !c.format.fp8) bad("--ue8m0 needs --fp8");
  if (c.ranks_per_node > 0 && ranks % c.ranks_per_node != 0)
    bad("--ranks-per-node " + std::to_string(c.ranks_per_node) + " does not divide the " +
        std::to_string(ranks) + " ranks (every node must have the same number)");
  return c;
}

comm::DispatchOptions epx_options(const Config& c) {
  comm::DispatchOptions o;
  o.fp8 = c.format.fp8;
  o.ue8m0 = c.format.ue8m0;
  return o;
}

comm::CombineOptions combine_options(const Config& c) {
  comm::CombineOptions o;
  o.partials_in_input_dtype = c.bf16_partials;
  return o;
}

// Dispatch and combine once on both paths and compare everything, bit for
// bit: dispatch of the baseline against the reference, epx against the
// baseline; combine of each against the reference summed in its own order
// (the baseline rank by rank; epx node by node, then rank by rank, as
// documented). Returns y, the combine input both paths are timed with.
Tensor check_results(MPI_Comm comm, const Config& c, const Workload& w,
                     AlltoallvDispatcher& baseline, comm::Buffer& buffer,
                     const comm::Layout& layout) {
  const int rank = comm_rank(comm);
  progress(comm, "dispatch: computing the reference and checking both paths");
  const test::InputsOf inputs = workload_inputs(c.spec);
  const test::Topology nodes = test::Topology::of(buffer.group(), c.spec.experts);
  const test::ExpectedDispatch ref = test::expected_dispatch(nodes, rank, inputs, c.format);
  const std::vector<test::RowOrigin>* from = &ref.origin;

  const BaselineDispatch& b = baseline.dispatch(w.x, w.topk_idx, w.topk_weights, c.format);
  agree_on_check(
      comm,
      first_error({compare_tensors("baseline dispatch x", b.x, ref.x, from),
                   compare_tensors("baseline dispatch x_scales", b.x_scales, ref.x_scales, from),
                   compare_tensors("baseline dispatch topk_idx", b.topk_idx, ref.topk_idx, from),
                   compare_tensors("baseline dispatch topk_weights", b.topk_weights,
                                   ref.topk_weights, from),
                   compare_counts("baseline num_recv_tokens_per_expert",
                                  b.num_recv_tokens_per_expert, ref.num_recv_tokens_per_expert)}),
      "the MPI_Alltoallv baseline differs from the reference (a bug in the benchmark)");

  std::optional<comm::DispatchResult> e =
      buffer.dispatch(w.x, w.topk_idx, w.topk_weights, layout, epx_options(c));
  agree_on_check(
      comm,
      first_error(
          {compare_tensors("epx dispatch x", e->x, b.x, from),
           compare_tensors("epx dispatch x_scales", e->x_scales, b.x_scales, from),
           compare_tensors("epx dispatch topk_idx", e->topk_idx, b.topk_idx, from),
           compare_tensors("epx dispatch topk_weights", e->topk_weights, b.topk_weights, from),
           compare_counts("epx num_recv_tokens_per_expert", e->num_recv_tokens_per_expert,
                          b.num_recv_tokens_per_expert)}),
      "epx dispatch differs from the MPI_Alltoallv baseline");

  const test::ExpertRows y_rows = combine_rows(test::payload_of(w.x, c.format), c.y);
  test::CombineReference order;
  order.ydtype = c.y.dtype();
  const Tensor by_rank = test::expected_combine(test::Topology::flat(nodes.ranks(), c.spec.experts),
                                                rank, inputs, y_rows, order);
  // One node: the same order.
  const Tensor by_node =
      nodes.num_nodes() == 1 ? by_rank : test::expected_combine(nodes, rank, inputs, y_rows, order);
  Tensor y = make_combine_input(b.x, b.x_scales, rank, c.y);
  const Tensor yb = baseline.combine(y);
  agree_on_check(comm, compare_tensors("baseline combine", yb, by_rank),
                 "the MPI_Alltoallv baseline's combine differs from the reference (rank order)");
  const Tensor ye = buffer.combine(y, e->handle);
  agree_on_check(comm, compare_tensors("epx combine", ye, by_node),
                 "epx combine differs from the reference (node order, then rank order)");
  const Tensor yi = in_buffer(buffer, e->handle, y);
  agree_on_check(
      comm,
      compare_tensors("epx combine (y in the buffer)", buffer.combine(yi, e->handle), by_node),
      "epx combine of a y in the buffer differs from the reference");

  if (c.bf16_partials && nodes.num_nodes() > 1) {
    test::CombineReference rounded = order;
    rounded.partials_in_input_dtype = true;
    agree_on_check(comm,
                   compare_tensors("epx combine (bf16 partials)",
                                   buffer.combine(y, e->handle, combine_options(c)),
                                   test::expected_combine(nodes, rank, inputs, y_rows, rounded)),
                   "epx combine with bf16 partials differs from the reference");
  }

  if (c.check_only) {
    // A second round on the same buffer must give the same bits.
    std::optional<comm::DispatchResult> again =
        buffer.dispatch(w.x, w.topk_idx, w.topk_weights, layout, epx_options(c));
    agree_on_check(
        comm,
        first_error({compare_tensors("epx dispatch x (second call)", again->x, ref.x, from),
                     compare_tensors("epx combine (second call)", buffer.combine(y, again->handle),
                                     by_node)}),
        "a second epx dispatch/combine differs from the first");
  }
  return y;
}

// Bytes that cross nodes in one dispatch and one combine: epx's as its
// transport counts them, the baseline's from its send counts (its
// MPI_Alltoallv moves every row to every destination rank).
void measure_internode(MPI_Comm comm, const Config& c, const Workload& w,
                       const AlltoallvDispatcher& baseline, comm::Buffer& buffer,
                       const comm::Layout& layout, const Tensor& y, DispatchReport& r) {
  Group& g = buffer.group();
  const std::uint64_t before = buffer.internode_bytes();
  std::optional<comm::DispatchResult> d =
      buffer.dispatch(w.x, w.topk_idx, w.topk_weights, layout, epx_options(c));
  const std::uint64_t mid = buffer.internode_bytes();
  buffer.combine(in_buffer(buffer, d->handle, y), d->handle, combine_options(c));
  const std::uint64_t after = buffer.internode_bytes();
  r.internode_dispatch_bytes = mean_over_ranks(comm, static_cast<double>(mid - before));
  r.internode_combine_bytes = mean_over_ranks(comm, static_cast<double>(after - mid));

  const std::int64_t row = r.bytes_per_token + static_cast<std::int64_t>(c.spec.topk) * 12;
  double dispatch_bytes = 0;
  for (int dst = 0; dst < g.size(); ++dst)
    if (g.node_of(dst) != g.node())
      dispatch_bytes += static_cast<double>(baseline.send_counts()[dst]) * static_cast<double>(row);
  // Combine sends back the rows this rank received from other nodes.
  const double y_row = static_cast<double>(y.dim(1)) * static_cast<double>(dtype_size(y.dtype()));
  double combine_bytes = 0;
  for (int src = 0; src < g.size(); ++src)
    if (g.node_of(src) != g.node()) combine_bytes += baseline.recv_counts()[src] * y_row;
  r.baseline_internode_dispatch_bytes = mean_over_ranks(comm, dispatch_bytes);
  r.baseline_internode_combine_bytes = mean_over_ranks(comm, combine_bytes);
}

// Times the copy ceiling, then dispatch and combine, baseline first, on the
// data that check_results() verified.
DispatchReport measure(MPI_Comm comm, const Config& c, const Workload& w,
                       AlltoallvDispatcher& baseline, comm::Buffer& buffer,
                       const comm::Layout& layout, const Tensor& y) {
  const int rank = comm_rank(comm);
  const int ranks = comm_size(comm);
  DispatchReport r;
  r.ranks = ranks;
  r.tokens = c.spec.tokens;
  r.hidden = c.spec.hidden;
  r.topk = c.spec.topk;
  r.experts = c.spec.experts;
  r.fp8 = c.format.fp8;
  r.ue8m0 = c.format.ue8m0;
  r.seed = c.spec.seed;
  r.warmup = c.repeat.warmup;
  r.iters = c.repeat.iters;
  r.transport = transport_names(buffer, rank, ranks);
  Group& g = buffer.group();
  r.nodes = g.num_nodes();
  r.ranks_per_node = g.local_size();
  r.bytes_per_token = c.format.fp8 ? c.spec.hidden + c.spec.hidden / 128 * 4 : c.spec.hidden * 2;
  const std::int64_t recv_rows = y.dim(0);
  r.recv_tokens = mean_over_ranks(comm, static_cast<double>(recv_rows));
  r.dispatch_bytes = r.recv_tokens * static_cast<double>(r.bytes_per_token);
  // Combine brings back as many rows, in total, as dispatch delivered.
  r.combine_bytes = mean_over_ranks(comm, static_cast<double>(baseline.num_send_rows())) *
                    static_cast<double>(c.spec.hidden) * static_cast<double>(dtype_size(y.dtype()));
  measure_internode(comm, c, w, baseline, buffer, layout, y, r);

  const std::string each = " (" + std::to_string(c.repeat.warmup) + " warm-up + " +
                           std::to_string(c.repeat.iters) + " timed)";
  // Each group is timed in the same iterations, in rotating order: the ratios
  // then compare like with like on a busy or oversubscribed host.
  progress(comm, "dispatch: timing the copy ceiling, the baseline and epx dispatch" + each);
  CopyCeiling copy(static_cast<std::size_t>(recv_rows) * static_cast<std::size_t>(r.bytes_per_token));
  std::optional<comm::DispatchResult> last;  // dropped before each call: its rows free the space
  const comm::DispatchOptions opts = epx_options(c);
  std::vector<TimedOp> ops = {
      {[] {}, [&] { copy.run(); }},
      {[] {}, [&] { baseline.dispatch(w.x, w.topk_idx, w.topk_weights, c.format); }},
      {[&] { last.reset(); },
       [&] { last = buffer.dispatch(w.x, w.topk_idx, w.topk_weights, layout, opts); }}};
  // The FP8 cast of every token alone: work both dispatchers do, not a copy.
  if (c.format.fp8)
    ops.push_back({[] {}, [&] { kernels::per_token_cast_to_fp8(w.x, c.format.ue8m0); }});
  const std::vector<double> d = time_interleaved(comm, c.repeat, ops);
  r.copy_s = d[0];
  r.baseline_dispatch_s = d[1];
  r.dispatch_s = d[2];
  if (c.format.fp8) r.cast_s = d[3];
  if (!last) last = buffer.dispatch(w.x, w.topk_idx, w.topk_weights, layout, opts);

  progress(comm, "dispatch: timing the baseline and epx combine" + each);
  std::optional<Tensor> combined;
  const Tensor y_in = in_buffer(buffer, last->handle, y);
  const std::vector<double> k = time_interleaved(
      comm, c.repeat,
      {{[] {}, [&] { baseline.combine(y); }},
       {[&] { combined.reset(); }, [&] { combined = buffer.combine(y, last->handle, combine_options(c)); }},
       {[&] { combined.reset(); }, [&] { combined = buffer.combine(y_in, last->handle, combine_options(c)); }}});
  r.baseline_combine_s = k[0];
  r.combine_push_s = k[1];
  r.combine_s = k[2];

  return r;
}

int run_dispatch(MPI_Comm comm, const std::vector<std::string>& args) {
  const Config c = parse_config(comm, args);
  const int rank = comm_rank(comm);
  const int ranks = comm_size(comm);
  progress(comm, "dispatch: " + std::to_string(ranks) + " ranks, generating " +
                     std::to_string(c.spec.tokens) + " tokens per rank");
  const Workload w = make_workload(c.spec, rank);

  // Errors from here on may leave ranks apart: report and abort every rank
  // rather than unwind through collective destructors (which could hang).
  // The group and buffer live outside the try so that no destructor runs first.
  std::optional<Group> group;
  std::optional<comm::Buffer> buffer;
  try {
    group.emplace(comm, c.ranks_per_node);
    buffer.emplace(*group);
    AlltoallvDispatcher baseline(comm, c.spec.experts);
    baseline.plan(w.topk_idx);
    const comm::Layout layout = buffer->get_dispatch_layout(w.topk_idx, c.spec.experts);

    const Tensor y = check_results(comm, c, w, baseline, *buffer, layout);
    if (c.check_only) {
      if (rank == 0) {
        std::cout << "epx-bench dispatch: check OK (" << ranks
                  << (ranks == 1 ? " rank, " : " ranks, ")
                  << (c.format.fp8 ? (c.format.ue8m0 ? "fp8, ue8m0" : "fp8") : "bf16")
                  << "): epx and the MPI_Alltoallv baseline equal the reference bit for bit\n";
      }
      return 0;
    }

    const DispatchReport r = measure(comm, c, w, baseline, *buffer, layout, y);
    print_report(rank, c.json, r, "dispatch");
    return 0;
  } catch (const CheckFailed&) {
    throw;  // every rank agreed and throws it: unwinding together is safe
  } catch (const std::exception& e) {
    abort_all(comm, e.what());
  }
}

}  // namespace

void register_dispatch_bench(Registry& registry) {
  registry.add(Subcommand{"dispatch", kSummary,
                          [] {
                            return make_options().usage(
                                std::string(kSummary) + ".\n" +
                                "Run under epxrun with the ranks you want, e.g.\n"
                                "  epxrun -n 4 -- epx-bench dispatch --fp8 --json");
                          },
                          run_dispatch});
}

}  // namespace epx::bench
