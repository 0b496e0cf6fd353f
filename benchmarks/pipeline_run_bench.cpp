// `epx-bench pipeline-run`: runs the pipeline Executor over MPI, one rank per
// pipeline stage, with a synthetic stage that sleeps for the given F, B, W
// and FB costs, and prints each schedule's measured step time beside the
// simulator's prediction for the same costs: how far the simulator can be
// trusted, and what the executor itself adds (waits, messages, wake-ups).
// Sleeping, not spinning, so that ranks may outnumber cores: a sleeping rank
// leaves the core to the others, as a rank waiting on a GPU would.
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <epx/error.hpp>
#include <epx/group.hpp>
#include <epx/pipeline_tools.hpp>
#include <iomanip>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "benchmarks/collective.hpp"
#include "benchmarks/options.hpp"
#include "benchmarks/pipeline_costs.hpp"
#include "benchmarks/registry.hpp"
#include "benchmarks/timing.hpp"

namespace epx::bench {

namespace {

const char* const kSummary =
    "pipeline Executor over MPI with a sleeping stage: measured step time vs the simulator";

OptionSet make_options() {
  OptionSet o("pipeline-run");
  o.add_string("schedule", "all", "all gpipe 1f1b zb-h1 dualpipe dualpipev",
               "one schedule, or all that the rank count allows");
  o.add_int("microbatches", 8, 1, 1 << 16, "micro-batches per step (M)");
  pipeline::Costs defaults;
  defaults.f = 2000;
  defaults.b = 4000;
  defaults.w = 2000;
  add_cost_options(o, defaults, " (microseconds; the stage sleeps this long)");
  o.add_double("progress-us", 0, 0, 1e9,
               "sleep in slices of this many microseconds, calling Stage::progress() between "
               "them, as a stage that lets its messages move between layers (0: one sleep)");
  o.add_int("tokens", 16, 1, 1 << 20, "rows of each activation and gradient message");
  o.add_int("hidden", 256, 1, 1 << 20, "columns of each activation and gradient message (f32)");
  o.add_int("warmup", 1, 0, 1000, "untimed steps first");
  o.add_int("iters", 5, 1, 100000, "timed steps per schedule; the median is reported");
  o.add_flag("json", "print one JSON object instead of the table");
  return o;
}

void sleep_us(double us) {
  if (us > 0) std::this_thread::sleep_for(std::chrono::duration<double, std::micro>(us));
}

// Every chunk sleeps its cost and hands on a fresh tensor of the activation
// shape. Costs are per chunk (already scaled for DualPipeV's half chunks).
class SleepingStage : public pipeline::Stage {
 public:
  SleepingStage(const pipeline::Costs& c, std::vector<std::int64_t> shape, double slice_us)
      : c_(c), shape_(std::move(shape)), slice_us_(slice_us) {}
  Tensor forward(int, int, const Tensor&) override { return work_then_tensor(c_.f); }
  Tensor backward(int, int, const Tensor&) override { return work_then_tensor(c_.b); }
  Tensor backward_input(int, int, const Tensor&) override {
    return work_then_tensor(c_.b - c_.w);
  }
  void backward_weight(int, int) override { work(c_.w); }
  Tensor forward_backward(int, int, const Tensor&, int, int, const Tensor&,
                          Tensor& grad_input) override {
    // The simulator's FB cost: fb, or f + b when not given.
    work(c_.fb < 0 ? c_.f + c_.b : c_.fb);
    grad_input = Tensor::zeros(shape_, DType::f32);
    return Tensor::zeros(shape_, DType::f32);
  }

 private:
  // Lasts `us` in all (a sleep overshoots by some tens of microseconds, so
  // the slices run to a deadline rather than adding up their lengths).
  void work(double us) {
    if (slice_us_ <= 0) return sleep_us(us);
    using Clock = std::chrono::steady_clock;
    const Clock::time_point end =
        Clock::now() + std::chrono::duration_cast<Clock::duration>(
                           std::chrono::duration<double, std::micro>(us));
    for (Clock::time_point now = Clock::now(); now < end; now = Clock::now()) {
      sleep_us(std::min(slice_us_, std::chrono::duration<double, std::micro>(end - now).count()));
      progress();
    }
  }
  Tensor work_then_tensor(double us) {
    work(us);
    return Tensor::zeros(shape_, DType::f32);
  }
  pipeline::Costs c_;
  std::vector<std::int64_t> shape_;
  double slice_us_;
};

struct Run {
  pipeline::Schedule schedule;
  pipeline::Costs costs;  // per chunk
  double simulated_us = 0;
  double measured_us = 0;
  int peak_receives = 0;  // most activation buffers posted ahead on a rank
  std::unique_ptr<SleepingStage> stage;
  std::unique_ptr<pipeline::Executor> executor;
};

std::vector<pipeline::ScheduleKind> kinds(const std::string& name) {
  if (name != "all") return {pipeline::parse_schedule_kind(name)};
  return {pipeline::ScheduleKind::gpipe, pipeline::ScheduleKind::one_f_one_b,
          pipeline::ScheduleKind::zb_h1, pipeline::ScheduleKind::dualpipe,
          pipeline::ScheduleKind::dualpipe_v};
}

void print_table(std::ostream& os, const std::vector<Run>& runs, const OptionSet& o,
                 const std::vector<std::string>& skipped) {
  const pipeline::Costs c = costs_from(o);
  os << "epx-bench pipeline-run: " << runs.front().schedule.ranks << " ranks, "
     << o.get_int("microbatches") << " micro-batches; sleeps per 1/P of the model: F " << c.f
     << " us, B " << c.b << " us, W " << c.w << " us, FB "
     << (c.fb < 0 ? "F+B" : std::to_string(c.fb) + " us") << "; messages f32[" << o.get_int("tokens")
     << "," << o.get_int("hidden") << "]; "
     << (o.get_double("progress-us") > 0
             ? "Stage::progress() every " + std::to_string(o.get_double("progress-us")) + " us; "
             : std::string())
     << "median of " << o.get_int("iters") << " steps\n\n";
  os << std::left << std::setw(11) << "schedule" << std::right << std::setw(14) << "simulated ms"
     << std::setw(13) << "measured ms" << std::setw(10) << "ratio" << std::setw(12)
     << "peak recvs" << "\n";
  os << std::fixed;
  for (const Run& r : runs) {
    os << std::left << std::setw(11) << pipeline::to_string(r.schedule.kind) << std::right
       << std::setprecision(1) << std::setw(14) << r.simulated_us / 1e3 << std::setw(13)
       << r.measured_us / 1e3 << std::setprecision(3) << std::setw(10)
       << r.measured_us / r.simulated_us << std::setw(12) << r.peak_receives << "\n";
  }
  for (const std::string& why : skipped) os << "skipped: " << why << "\n";
  os << "(ratio: measured / simulated; peak recvs: most activation buffers a rank posted ahead)\n";
}

void print_json(std::ostream& os, const std::vector<Run>& runs, int microbatches) {
  os << "{\"ranks\":" << runs.front().schedule.ranks << ",\"microbatches\":" << microbatches
     << ",\"results\":[";
  for (std::size_t i = 0; i < runs.size(); ++i) {
    const Run& r = runs[i];
    os << (i ? "," : "") << "{\"schedule\":\"" << pipeline::to_string(r.schedule.kind)
       << "\",\"simulated_us\":" << r.simulated_us << ",\"measured_us\":" << r.measured_us
       << ",\"ratio\":" << r.measured_us / r.simulated_us
       << ",\"peak_posted_receives\":" << r.peak_receives << "}";
  }
  os << "]}\n";
}

int run_pipeline_run(MPI_Comm comm, const std::vector<std::string>& args) {
  OptionSet o = make_options();
  o.parse(args);
  const int ranks = comm_size(comm);
  const int microbatches = static_cast<int>(o.get_int("microbatches"));
  const pipeline::Costs per_stage = costs_from(o);
  const std::vector<std::int64_t> shape = {o.get_int("tokens"), o.get_int("hidden")};
  Group group(comm);

  // Every rank builds the same schedules (pure functions of the options), so
  // they skip the same ones.
  std::vector<Run> runs;
  std::vector<std::string> skipped;
  for (pipeline::ScheduleKind kind : kinds(o.get_string("schedule"))) {
    Run r;
    try {
      r.schedule = pipeline::make_schedule(kind, {ranks, microbatches});
      r.costs = pipeline::scale_costs(r.schedule, per_stage);
      r.simulated_us = pipeline::simulate(r.schedule, r.costs).makespan;
    } catch (const Error& e) {
      if (o.get_string("schedule") != "all")
        throw UsageError(std::string("epx-bench pipeline-run: ") + e.what());
      skipped.push_back(e.what());
      continue;
    }
    r.stage = std::make_unique<SleepingStage>(r.costs, shape, o.get_double("progress-us"));
    pipeline::ExecutorOptions eo;
    eo.activation_shape = shape;
    r.executor = std::make_unique<pipeline::Executor>(group, r.schedule, *r.stage, eo);
    runs.push_back(std::move(r));
  }

  // Inputs and labels everywhere: each rank reads only those it needs.
  std::vector<Tensor> inputs(microbatches, Tensor::zeros(shape, DType::f32));
  const pipeline::LossFn loss = [](int, const Tensor&, const Tensor&, Tensor& grad) {
    std::fill_n(grad.data<float>(), grad.numel(), 0.0f);
    return 0.0;
  };
  std::vector<TimedOp> ops;
  for (Run& r : runs) {
    pipeline::Executor* ex = r.executor.get();
    ops.push_back({[] {}, [ex, &inputs, &loss] { ex->step(inputs, inputs, loss); }});
  }
  const std::vector<double> medians = time_interleaved(
      comm, {static_cast<int>(o.get_int("warmup")), static_cast<int>(o.get_int("iters"))}, ops);
  for (std::size_t i = 0; i < runs.size(); ++i) {
    runs[i].measured_us = medians[i] * 1e6;
    int peak = runs[i].executor->last_step_stats().peak_posted_receives;
    MPI_Allreduce(MPI_IN_PLACE, &peak, 1, MPI_INT, MPI_MAX, comm);
    runs[i].peak_receives = peak;
  }
  if (comm_rank(comm) == 0) {
    if (o.flag("json")) {
      print_json(std::cout, runs, microbatches);
    } else {
      print_table(std::cout, runs, o, skipped);
    }
    std::cout.flush();
  }
  return 0;
}

}  // namespace

void register_pipeline_run_bench(Registry& registry) {
  registry.add(Subcommand{
      "pipeline-run", kSummary,
      [] {
        return make_options().usage(
            std::string(kSummary) +
            ".\nOne rank per pipeline stage, e.g.\n"
            "  epxrun -n 4 -- epx-bench pipeline-run --microbatches 8 --cost-f 2000 --cost-b 4000");
      },
      run_pipeline_run});
}

}  // namespace epx::bench
