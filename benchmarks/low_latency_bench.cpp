// `epx-bench low-latency`: the decode path. epx's low-latency dispatch and
// combine (fixed double-buffered slots, FP8 cast inside the call), checked bit
// for bit against a plain-loop reference, then timed per call (median and p99)
// beside normal mode and the MPI_Alltoallv dispatcher on the same tokens in
// the same iterations; with --hook, the step time when compute runs between
// each call's send and its receive hook.
#include <algorithm>
#include <cstdint>
#include <cstring>
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
#include "benchmarks/expert_layout.hpp"
#include "benchmarks/low_latency_report.hpp"
#include "benchmarks/options.hpp"
#include "benchmarks/registry.hpp"
#include "benchmarks/report_output.hpp"
#include "benchmarks/timing.hpp"
#include "benchmarks/workload.hpp"
#include "tests/support/compare.hpp"
#include "tests/support/low_latency_reference.hpp"

namespace epx::bench {

namespace {

using test::compare_tensors;
using test::first_error;

const char* const kSummary =
    "low-latency dispatch + combine (decode): latency vs normal mode and MPI_Alltoallv, with hooks";

OptionSet make_options() {
  OptionSet o("low-latency");
  o.add_int("tokens", 128, 1, std::int64_t{1} << 20,
            "tokens per rank (T), also the buffer's max_tokens_per_rank");
  o.add_int("hidden", 2048, 1, std::int64_t{1} << 20,
            "hidden size (H); a multiple of 128 with fp8");
  o.add_int("topk", 8, 1, 1024, "experts per token (K)");
  o.add_int("experts", 64, 1, std::int64_t{1} << 20, "experts (E), a multiple of the rank count");
  o.add_flag("fp8", "e4m3 payload with per-token 1x128 f32 scales, cast inside dispatch (default)");
  o.add_flag("no-fp8", "bf16 payload");
  o.add_flag("ue8m0", "with fp8: scales rounded up to powers of two");
  o.add_int("warmup", 10, 0, 1000000, "untimed iterations before the measurement");
  o.add_int("iters", 100, 1, 1000000, "timed iterations; median and p99 are reported");
  o.add_int("seed", 1, 0, INT64_MAX, "random seed (each rank derives its own streams)");
  o.add_flag("hook", "also time steps with return_recv_hook and compute between send and hook");
  o.add_int("compute-us", 100, 0, 10000000,
            "with --hook: microseconds of busy compute after each of dispatch and combine");
  o.add_flag("json", "print one JSON object instead of the table");
  return o;
}

struct Config {
  WorkloadSpec spec;
  BaselineOptions format;
  Repeat repeat;
  bool hook = false;
  std::int64_t compute_us = 0;
  bool json = false;
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
  c.format.fp8 = !o.flag("no-fp8");
  c.format.ue8m0 = o.flag("ue8m0");
  c.repeat.warmup = static_cast<int>(o.get_int("warmup"));
  c.repeat.iters = static_cast<int>(o.get_int("iters"));
  c.hook = o.flag("hook");
  c.compute_us = o.get_int("compute-us");
  c.json = o.flag("json");

  const int ranks = comm_size(comm);
  auto bad = [](const std::string& why) { throw UsageError("epx-bench low-latency: " + why); };
  if (o.flag("fp8") && o.flag("no-fp8")) bad("--fp8 and --no-fp8 together");
  if (c.spec.topk > c.spec.experts)
    bad("--topk " + std::to_string(c.spec.topk) + " exceeds --experts " +
        std::to_string(c.spec.experts));
  if (c.spec.experts % ranks != 0)
    bad("--experts " + std::to_string(c.spec.experts) + " is not a multiple of the " +
        std::to_string(ranks) + " ranks");
  if (c.format.fp8 && c.spec.hidden % 128 != 0)
    bad("--hidden " + std::to_string(c.spec.hidden) +
        " with fp8: expected a multiple of 128 (or --no-fp8)");
  if (c.format.ue8m0 && !c.format.fp8) bad("--ue8m0 needs fp8");
  return c;
}

comm::LowLatencyOptions ll_options(const Config& c, bool hook) {
  comm::LowLatencyOptions o;
  o.fp8 = c.format.fp8;
  o.ue8m0 = c.format.ue8m0;
  o.return_recv_hook = hook;
  return o;
}

comm::DispatchOptions normal_options(const Config& c) {
  comm::DispatchOptions o;
  o.fp8 = c.format.fp8;
  o.ue8m0 = c.format.ue8m0;
  return o;
}

// Receive space for normal mode at this shape: every rank's T tokens at most,
// with their scales and top-k metadata, four times over (it grows if short).
std::size_t normal_buffer_bytes(const Config& c, int ranks) {
  const std::size_t row =
      static_cast<std::size_t>(2 * c.spec.hidden + c.spec.hidden / 32 + 12 * c.spec.topk + 64);
  const std::size_t need = 4 * static_cast<std::size_t>(ranks * c.spec.tokens) * row;
  return std::max(need, std::size_t{16} << 20);
}

// The reference (tests/support) of one low-latency round on this rank.
struct Reference {
  test::LowLatencyExpected dispatch;
  Tensor combined;  // [T,H] bf16: the combine of make_low_latency_combine_input
};

Reference compute_reference(const Config& c, int rank, const Group& group) {
  const test::InputsOf inputs = workload_inputs(c.spec);
  const test::Topology topology = test::Topology::of(group, c.spec.experts);
  const std::int64_t slots = static_cast<std::int64_t>(group.size()) * c.spec.tokens;
  Reference r;
  r.dispatch = test::expected_low_latency_dispatch(topology, rank, inputs, c.format);
  const test::Payload own = test::payload_of(inputs(rank).x, c.format);
  r.combined = test::expected_low_latency_combine(
      topology, rank, inputs, low_latency_combine_rows(own, topology.experts_per_rank(), slots),
      DType::bf16);
  return r;
}

// One low-latency dispatch and combine, compared with the reference; with
// `hook`, through return_recv_hook. Returns y, the combine input.
Tensor check_low_latency_round(MPI_Comm comm, const Config& c, const Workload& w,
                               const Reference& ref, comm::Buffer& ll, bool hook) {
  const int rank = comm_rank(comm);
  const std::int64_t slots = static_cast<std::int64_t>(comm_size(comm)) * c.spec.tokens;
  const std::string mode = hook ? " (return_recv_hook)" : "";
  const comm::LowLatencyOptions opts = ll_options(c, hook);
  std::optional<comm::LowLatencyDispatchResult> d = ll.low_latency_dispatch(w.x, w.topk_idx, opts);
  std::string missing;
  if (hook && !d->hook) missing = "low_latency_dispatch with return_recv_hook returned no hook";
  if (hook && d->hook) d->hook();
  agree_on_check(comm,
                 missing.empty() ? test::compare_low_latency_dispatch("low-latency dispatch" + mode,
                                                                      *d, ref.dispatch, slots)
                                 : missing,
                 "low-latency dispatch" + mode + " differs from the reference");

  Tensor y = make_low_latency_combine_input(d->x, d->x_scales, d->count, rank);
  std::optional<comm::LowLatencyCombineResult> k =
      ll.low_latency_combine(y, w.topk_idx, w.topk_weights, d->handle, opts);
  if (hook && !k->hook) missing = "low_latency_combine with return_recv_hook returned no hook";
  if (hook && k->hook) k->hook();
  agree_on_check(
      comm,
      missing.empty() ? compare_tensors("low-latency combine" + mode, k->x, ref.combined) : missing,
      "low-latency combine" + mode + " differs from the reference");
  return y;
}

struct NormalInputs {
  Tensor y;  // normal mode's and the baseline's combine input (the same rows)
  double rows_sent = 0;
};

// Normal mode and the baseline once each, compared with each other (the
// dispatch benchmark checks both against a reference in depth).
NormalInputs check_normal(MPI_Comm comm, const Config& c, const Workload& w,
                          AlltoallvDispatcher& baseline, comm::Buffer& normal) {
  baseline.plan(w.topk_idx);
  const BaselineDispatch& b = baseline.dispatch(w.x, w.topk_idx, w.topk_weights, c.format);
  const comm::Layout layout = normal.get_dispatch_layout(w.topk_idx, c.spec.experts);
  std::optional<comm::DispatchResult> e =
      normal.dispatch(w.x, w.topk_idx, w.topk_weights, layout, normal_options(c));
  agree_on_check(
      comm,
      first_error({compare_tensors("normal dispatch x", e->x, b.x, nullptr),
                   compare_tensors("normal dispatch x_scales", e->x_scales, b.x_scales, nullptr)}),
      "normal-mode dispatch differs from the MPI_Alltoallv baseline");
  NormalInputs n;
  n.y = make_combine_input(b.x, b.x_scales, comm_rank(comm));
  n.rows_sent = static_cast<double>(baseline.num_send_rows());
  const Tensor yb = baseline.combine(n.y);
  agree_on_check(
      comm,
      compare_tensors("normal combine",
                      normal.combine(in_buffer(normal, e->handle, n.y), e->handle), yb, nullptr),
      "normal-mode combine differs from the MPI_Alltoallv baseline");
  return n;
}

std::int64_t valid_pairs(const Tensor& topk_idx) {
  std::int64_t n = 0;
  const std::int64_t* idx = topk_idx.data<std::int64_t>();
  for (std::int64_t i = 0; i < topk_idx.numel(); ++i) n += idx[i] >= 0;
  return n;
}

LowLatencyReport measure(MPI_Comm comm, const Config& c, const Workload& w, comm::Buffer& ll,
                         comm::Buffer& normal, AlltoallvDispatcher& baseline, const Tensor& y_ll,
                         const NormalInputs& n) {
  const int rank = comm_rank(comm);
  const int ranks = comm_size(comm);
  LowLatencyReport r;
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
  r.transport = transport_names(ll, rank, ranks);
  r.bytes_per_row = c.format.fp8 ? c.spec.hidden + c.spec.hidden / 128 * 4 : c.spec.hidden * 2;
  r.pairs = mean_over_ranks(comm, static_cast<double>(valid_pairs(w.topk_idx)));
  r.bytes_sent = r.pairs * static_cast<double>(r.bytes_per_row);
  r.combine_bytes_sent = r.pairs * static_cast<double>(c.spec.hidden * 2);
  r.normal_rows = mean_over_ranks(comm, n.rows_sent);
  r.normal_bytes_sent = r.normal_rows * static_cast<double>(r.bytes_per_row);
  r.buffer_bytes = comm::Buffer::low_latency_size_hint(
      static_cast<int>(c.spec.tokens), static_cast<int>(c.spec.hidden), ranks, c.spec.experts);
  r.capacity_bytes = ll.capacity_bytes();
  r.deepep_bytes = deepep_low_latency_bytes(c.spec.tokens, c.spec.hidden, c.spec.experts);

  // Results are dropped before the next call of their kind: a low-latency
  // buffer half (or normal receive space) is free again only then.
  std::optional<comm::LowLatencyDispatchResult> ld;
  std::optional<comm::LowLatencyCombineResult> lc;
  std::optional<comm::DispatchResult> nd;
  std::optional<Tensor> ny, nc;
  auto drop_ll = [&] {
    lc.reset();
    ld.reset();
  };
  auto drop_normal = [&] {
    nc.reset();
    ny.reset();
    nd.reset();
  };
  const comm::LowLatencyOptions plain = ll_options(c, false), hooked = ll_options(c, true);
  const comm::DispatchOptions nopts = normal_options(c);
  auto none = [] {};

  std::vector<TimedSequence> seqs = {
      // 0: low-latency dispatch, then the combine of its result
      {{drop_ll, [&] { ld = ll.low_latency_dispatch(w.x, w.topk_idx, plain); }},
       {none,
        [&] { lc = ll.low_latency_combine(y_ll, w.topk_idx, w.topk_weights, ld->handle, plain); }}},
      // 1: normal mode: the routing's layout and dispatch, then combine
      {{drop_normal,
        [&] {
          const comm::Layout layout = normal.get_dispatch_layout(w.topk_idx, c.spec.experts);
          nd = normal.dispatch(w.x, w.topk_idx, w.topk_weights, layout, nopts);
        }},
       {[&] { ny = in_buffer(normal, nd->handle, n.y); },
        [&] { nc = normal.combine(*ny, nd->handle); }}},
      // 2: the MPI_Alltoallv dispatcher: plan and dispatch, then combine
      {{none,
        [&] {
          baseline.plan(w.topk_idx);
          baseline.dispatch(w.x, w.topk_idx, w.topk_weights, c.format);
        }},
       {none, [&] { baseline.combine(n.y); }}},
  };
  // 3: normal mode plus the caller's work to reach low-latency's outputs:
  // rows grouped per local expert after dispatch, gate weights applied to the
  // expert outputs before combine (the fair comparison).
  ExpertLayout grouped(c.spec.experts / ranks, static_cast<std::int64_t>(ranks) * c.spec.tokens,
                       c.spec.hidden);
  seqs.push_back(
      {{drop_normal,
        [&] {
          const comm::Layout layout = normal.get_dispatch_layout(w.topk_idx, c.spec.experts);
          nd = normal.dispatch(w.x, w.topk_idx, w.topk_weights, layout, nopts);
          grouped.permute(nd->x, nd->x_scales, nd->topk_idx);
        }},
       {none, [&] {
          ny = normal.combine_input(nd->handle, c.spec.hidden, DType::bf16);
          grouped.reduce(y_ll, nd->topk_weights, *ny);
          nc = normal.combine(*ny, nd->handle);
        }}});
  const std::size_t cast_at = seqs.size();
  if (c.format.fp8)  // cast_at: the FP8 cast of the T tokens alone
    seqs.push_back({{none, [&] { kernels::per_token_cast_to_fp8(w.x, c.format.ue8m0); }}});

  std::optional<BusyCompute> compute;
  const std::size_t hook_at = seqs.size();
  if (c.hook) {
    compute.emplace(static_cast<double>(c.compute_us));
    // hook_at: the step with hooks: each call's wait comes after the compute
    seqs.push_back({{drop_ll, [&] {
                       ld = ll.low_latency_dispatch(w.x, w.topk_idx, hooked);
                       compute->run();
                       ld->hook();
                       lc = ll.low_latency_combine(y_ll, w.topk_idx, w.topk_weights, ld->handle,
                                                   hooked);
                       compute->run();
                       lc->hook();
                     }}});
    // hook_at + 1: the same work back to back, no hook
    seqs.push_back({{drop_ll, [&] {
                       ld = ll.low_latency_dispatch(w.x, w.topk_idx, plain);
                       compute->run();
                       lc = ll.low_latency_combine(y_ll, w.topk_idx, w.topk_weights, ld->handle,
                                                   plain);
                       compute->run();
                     }}});
    // hook_at + 2: the compute alone
    seqs.push_back({{none, [&] {
                       compute->run();
                       compute->run();
                     }}});
  }

  progress(comm,
           "low-latency: timing low-latency, normal-mode and MPI_Alltoallv dispatch + combine" +
               std::string(c.hook ? " and hooked steps" : "") + " (" +
               std::to_string(c.repeat.warmup) + " warm-up + " + std::to_string(c.repeat.iters) +
               " timed, interleaved)");
  const auto s = time_interleaved_samples(comm, c.repeat, seqs);
  drop_ll();
  drop_normal();

  r.dispatch_median = median(s[0][0]);
  r.dispatch_p99 = percentile(s[0][0], 99);
  r.combine_median = median(s[0][1]);
  r.combine_p99 = percentile(s[0][1], 99);
  r.normal_dispatch = median(s[1][0]);
  r.normal_combine = median(s[1][1]);
  r.baseline_dispatch = median(s[2][0]);
  r.baseline_combine = median(s[2][1]);
  r.normal_grouped_dispatch = median(s[3][0]);
  r.normal_weighted_combine = median(s[3][1]);
  if (c.format.fp8) r.cast = median(s[cast_at][0]);
  if (c.hook) {
    r.hook = true;
    r.compute_us = static_cast<double>(c.compute_us);
    r.step = median(s[hook_at][0]);
    r.serial_step = median(s[hook_at + 1][0]);
    r.compute = median(s[hook_at + 2][0]);
    r.max_comm_compute = std::max(r.dispatch_median + r.combine_median, r.compute);
  }
  return r;
}

int run_low_latency(MPI_Comm comm, const std::vector<std::string>& args) {
  const Config c = parse_config(comm, args);
  const int rank = comm_rank(comm);
  const int ranks = comm_size(comm);
  progress(comm, "low-latency: " + std::to_string(ranks) + " ranks, generating " +
                     std::to_string(c.spec.tokens) + " tokens per rank");
  const Workload w = make_workload(c.spec, rank);

  // Errors from here on may leave ranks apart: report and abort every rank
  // rather than unwind through collective destructors (which could hang).
  // The group and buffers live outside the try so that no destructor runs first.
  std::optional<Group> group;
  std::optional<comm::Buffer> ll, normal;
  try {
    group.emplace(comm);
    comm::BufferOptions lo;
    lo.low_latency = true;
    lo.max_tokens_per_rank = static_cast<int>(c.spec.tokens);
    lo.hidden = static_cast<int>(c.spec.hidden);
    lo.num_experts = c.spec.experts;
    // num_bytes is the normal-mode receive space, unused here: the
    // low-latency buffers (low_latency_size_hint) are sized by the shapes.
    lo.num_bytes = std::size_t{1} << 20;
    ll.emplace(*group, lo);
    comm::BufferOptions no;
    no.num_bytes = normal_buffer_bytes(c, ranks);
    normal.emplace(*group, no);
    AlltoallvDispatcher baseline(comm, c.spec.experts);

    progress(comm, "low-latency: computing the reference and checking every path");
    const Reference ref = compute_reference(c, rank, *group);
    const Tensor y_ll = check_low_latency_round(comm, c, w, ref, *ll, false);
    check_low_latency_round(comm, c, w, ref, *ll, true);
    const NormalInputs n = check_normal(comm, c, w, baseline, *normal);

    const LowLatencyReport r = measure(comm, c, w, *ll, *normal, baseline, y_ll, n);
    print_report(rank, c.json, r, "low-latency");
    return 0;
  } catch (const CheckFailed&) {
    throw;  // every rank agreed and throws it: unwinding together is safe
  } catch (const std::exception& e) {
    abort_all(comm, e.what());
  }
}

}  // namespace

void register_low_latency_bench(Registry& registry) {
  registry.add(Subcommand{"low-latency", kSummary,
                          [] {
                            return make_options().usage(
                                std::string(kSummary) + ".\n" +
                                "Run under epxrun with the ranks you want, e.g.\n"
                                "  epxrun -n 4 -- epx-bench low-latency --hook --compute-us 100");
                          },
                          run_low_latency});
}

}  // namespace epx::bench
