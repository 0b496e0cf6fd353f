// epx::pipeline planning tools: the simulator that predicts a schedule's
// time and memory, choose_schedule (the `auto` schedule: the fastest that
// fits a memory budget) and an SVG timeline of a simulation. Offline tools
// for trainers' setup, epx-bench and reports; the runtime (schedule IR,
// validate, Executor) is <epx/pipeline.hpp>, which this includes.
#pragma once

#include <string>
#include <vector>

#include <epx/config.hpp>
#include <epx/pipeline.hpp>

namespace epx::pipeline {

// Time of each op kind for one chunk, and the wire. `comm` is the expert
// all-to-all time inside each F and each B/Bi chunk: a sequential op pays it,
// an FB unit hides each half's comm behind the other half's compute as far
// as that compute lasts (min(comm, F) + min(comm, B)). W has no comm.
// Bi costs b - w. fb < 0 means f + b (no compute overlap).
struct Costs {
  double f = 1.0;
  double b = 2.0;
  double w = 1.0;
  double fb = -1.0;
  double comm = 0.0;
  double p2p = 0.0;  // latency of one activation/gradient between two ranks
};

struct OpTime {
  double start = 0.0;
  double end = 0.0;
};

struct Simulation {
  double makespan = 0.0;
  std::vector<double> busy;    // [rank] time spent in ops
  std::vector<double> bubble;  // [rank] makespan - busy
  double max_bubble = 0.0;
  // [rank] most micro-batch-chunks whose activations are alive at once: from
  // the start of a chunk's F to the end of its last backward piece (B, or
  // the W that follows Bi, since W still reads the stored inputs).
  std::vector<int> peak_activations;
  int param_copies = 0;             // most copies of any stage's weights
  std::vector<double> comm_hidden;  // [rank] all-to-all time hidden by FB
  double total_comm_hidden = 0.0;
  std::vector<std::vector<OpTime>> times;  // [rank][op], parallel to Schedule::ops
};

// Validates, then plays the schedule with every op as early as its rank and
// its inputs allow. Throws epx::Error(InvalidArgument) for negative costs or
// w > b.
EPX_API Simulation simulate(const Schedule& schedule, const Costs& costs);

// The same with costs per model stage (stage_costs[s] prices the ops of
// stage s; size schedule.stages), for stages that cost unlike amounts: the
// embedding on the first, the head on the last, dense and MoE layers mixed.
// An FB unit costs its forward half's stage's fb where that is >= 0, else
// that stage's f plus its backward half's stage's b; each half adds its
// stage's comm, less what the unit hides (min(comm, the other half's
// compute), each way). p2p must be the same in every entry. Throws
// epx::Error(InvalidArgument) for a size other than schedule.stages, and as
// above for any entry.
EPX_API Simulation simulate(const Schedule& schedule, const std::vector<Costs>& stage_costs);

// The same with costs per rank and local chunk (costs[rank][chunk], shaped
// as schedule.stage_of): for costs measured where they ran, e.g. DualPipe's
// two copies of a stage on ranks that do not run equally fast.
EPX_API Simulation simulate(const Schedule& schedule, const std::vector<std::vector<Costs>>& costs);

// Costs given per 1/ranks of the model, scaled to this schedule's chunks
// (halved for DualPipeV; p2p latency unchanged).
EPX_API Costs scale_costs(const Schedule& schedule, const Costs& per_stage);

// `auto`: every schedule that the shape allows, simulated with per_stage
// costs scaled to its chunks; the least makespan among those whose peak
// activations (in micro-batches x 1/ranks of the model) fit the budget.
struct AutoRequest {
  int ranks = 0;
  int microbatches = 0;
  Costs per_stage;             // costs of 1/ranks of the model
  double memory_budget = 0.0;  // per rank, micro-batches x 1/ranks of the model; 0: no limit
};

struct AutoCandidate {
  ScheduleKind kind = ScheduleKind::one_f_one_b;
  bool possible = false;  // the shape allows it
  bool fits = false;      // and its peak fits the budget
  double makespan = 0.0;
  double peak_activations = 0.0;  // max over ranks, budget units
  std::string note;               // why not, when not possible or not fitting
};

struct AutoChoice {
  Schedule schedule;
  Costs costs;  // as simulated (per chunk)
  Simulation simulation;
  std::vector<AutoCandidate> candidates;
  std::string reason;  // one sentence: why this one
};

// Throws epx::Error(InvalidArgument) when no schedule is possible or fits.
EPX_API AutoChoice choose_schedule(const AutoRequest& request);

// A Gantt chart of a simulated schedule: ranks as rows, ops coloured by kind,
// micro-batch numbers in the boxes. A standalone SVG document. With `marks`
// (empty, or one list per rank, on the simulation's time axis), each mark is
// a dark bar along the bottom of its rank's row: e.g. the EP comm calls of a
// measured step, inside the ops that made them.
EPX_API std::string timeline_svg(const Schedule& schedule, const Simulation& simulation,
                                 const std::vector<std::vector<OpTime>>& marks = {});

}  // namespace epx::pipeline
