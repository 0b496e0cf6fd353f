// `epx-bench pipeline`: what a pipeline schedule will cost before running it.
// Builds the schedule (or lets `auto` choose), simulates it and prints the
// makespan, bubbles, activation peaks, weight copies and hidden all-to-all
// time, optionally with an SVG timeline. Pure computation: rank 0 does it all.
#include <cstdint>
#include <epx/error.hpp>
#include <epx/pipeline_tools.hpp>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "benchmarks/collective.hpp"
#include "benchmarks/options.hpp"
#include "benchmarks/pipeline_costs.hpp"
#include "benchmarks/pipeline_report.hpp"
#include "benchmarks/registry.hpp"

namespace epx::bench {

namespace {

const char* const kSummary =
    "pipeline schedules: simulated makespan, bubbles, activation memory, SVG timeline";

OptionSet make_options() {
  OptionSet o("pipeline");
  o.add_string("schedule", "auto", "gpipe 1f1b zb-h1 dualpipe dualpipev auto",
               "gpipe, 1f1b, zb-h1, dualpipe, dualpipev, or auto (least makespan that fits "
               "--memory-budget)");
  o.add_int("ranks", 4, 1, 4096, "pipeline ranks (P)");
  o.add_int("microbatches", 8, 1, 1 << 20, "micro-batches per step (M); P x M at most 2^18");
  add_cost_options(o, pipeline::Costs{}, "");
  o.add_double("cost-comm", 0, 0, 1e12,
               "expert all-to-all inside each forward and each backward; FB units hide it");
  o.add_double("memory-budget", 0, 0, 1e12,
               "per-rank activation limit for auto, in micro-batches x 1/P of the model "
               "(0: none)");
  o.add_flag("json", "print one JSON object instead of the table");
  o.add_string("svg", "", "", "also write the timeline as an SVG Gantt chart to this file");
  return o;
}

// Each option alone is in range, but a schedule holds a few ops per rank and
// micro-batch, and the simulator and `auto` (every schedule) walk them all:
// 4096 x 2^20 would take hours and terabytes. The product is bounded instead
// (2^18: `auto` then takes under 10 s on a busy 2-core machine).
constexpr std::int64_t kMaxRankMicrobatches = std::int64_t{1} << 18;

PipelineReport build_report(const OptionSet& o) {
  PipelineReport r;
  const int ranks = static_cast<int>(o.get_int("ranks"));
  const int microbatches = static_cast<int>(o.get_int("microbatches"));
  if (std::int64_t{ranks} * microbatches > kMaxRankMicrobatches) {
    throw UsageError("epx-bench pipeline: --ranks x --microbatches = " + std::to_string(ranks) +
                     " x " + std::to_string(microbatches) + " = " +
                     std::to_string(std::int64_t{ranks} * microbatches) + ", expected at most " +
                     std::to_string(kMaxRankMicrobatches) +
                     " (the bound on the simulated schedule's size)");
  }
  pipeline::Costs per_stage = costs_from(o);
  per_stage.comm = o.get_double("cost-comm");
  r.memory_budget = o.get_double("memory-budget");
  const std::string& name = o.get_string("schedule");
  if (name == "auto") {
    pipeline::AutoChoice choice =
        pipeline::choose_schedule({ranks, microbatches, per_stage, r.memory_budget});
    r.automatic = true;
    r.schedule = std::move(choice.schedule);
    r.costs = choice.costs;
    r.simulation = std::move(choice.simulation);
    r.reason = std::move(choice.reason);
    r.candidates = std::move(choice.candidates);
    return r;
  }
  r.schedule = pipeline::make_schedule(pipeline::parse_schedule_kind(name), {ranks, microbatches});
  r.costs = pipeline::scale_costs(r.schedule, per_stage);
  r.simulation = pipeline::simulate(r.schedule, r.costs);
  if (r.memory_budget > 0) {
    for (double peak : peak_activations(r)) {
      if (peak > r.memory_budget + 1e-9) {
        throw UsageError("epx-bench pipeline: " + name + " needs " + std::to_string(peak) +
                         " micro-batches x 1/P of activations on a rank, over --memory-budget " +
                         std::to_string(r.memory_budget));
      }
    }
  }
  return r;
}

int run_pipeline(MPI_Comm comm, const std::vector<std::string>& args) {
  OptionSet o = make_options();
  o.parse(args);
  if (comm_rank(comm) != 0) return 0;
  PipelineReport report;
  try {
    report = build_report(o);
  } catch (const Error& e) {
    // An impossible request (shape, costs, budget): say why and exit non-zero.
    throw UsageError(std::string("epx-bench pipeline: ") + e.what());
  }
  if (o.flag("json")) {
    print_json(std::cout, report);
  } else {
    print_table(std::cout, report);
  }
  const std::string& svg = o.get_string("svg");
  if (!svg.empty()) {
    std::ofstream file(svg);
    file << pipeline::timeline_svg(report.schedule, report.simulation);
    if (!file) throw UsageError("epx-bench pipeline: cannot write --svg " + svg);
  }
  std::cout.flush();
  return 0;
}

}  // namespace

void register_pipeline_bench(Registry& registry) {
  registry.add(
      Subcommand{"pipeline", kSummary,
                 [] {
                   return make_options().usage(
                       std::string(kSummary) +
                       ".\nNo communication: one process is enough, e.g.\n"
                       "  epx-bench pipeline --schedule dualpipe --ranks 8 --microbatches 20 \\\n"
                       "      --cost-f 1 --cost-b 2 --cost-w 1 --cost-fb 3 --svg dualpipe.svg");
                 },
                 run_pipeline});
}

}  // namespace epx::bench
