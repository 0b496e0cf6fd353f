// One training step of a pipeline as a picture: each rank's ops as they ran
// (measured), above the simulator's play of the same schedule with the
// op costs measured in that step (pipeline::simulate), so that the two can
// be compared op by op. epx-train writes it for log.timeline_step.
#pragma once

#include <array>
#include <string>
#include <vector>

#include <epx/pipeline_tools.hpp>

namespace epx::train {

// Per op kind (F, B, Bi, W, FB): the ms that ops of the kind ran, their
// number, the ms spent in EP comm (comm::Buffer calls) inside them, and the
// ms they computed (an overlapped FB unit: the time its compute turn was
// held; any other op: its time less its EP comm), and the ms of EP comm
// hidden behind compute (an overlapped FB unit's; else 0).
struct OpTotals {
  static constexpr int kKinds = 5;
  std::array<double, kKinds> ms{}, ep_ms{}, compute_ms{}, hidden_ms{}, count{};
  void add(pipeline::OpKind kind, double op_ms, double op_ep_ms, double op_compute_ms,
           double op_hidden_ms);
  void add(const OpTotals& other);
  double mean(pipeline::OpKind kind, double otherwise) const;
  double mean_ep(pipeline::OpKind kind) const;
  double mean_compute(pipeline::OpKind kind) const;
  double mean_hidden(pipeline::OpKind kind) const;
  // The per-chunk costs pipeline::simulate takes, as measured: B is Bi + W
  // where the schedule splits it; fb the measured FB unit (no overlap
  // credited beyond what was measured).
  pipeline::Costs costs() const;
  // The same with a kind that never ran taking `otherwise`'s cost (and b
  // otherwise's where neither B nor Bi ran).
  pipeline::Costs costs(const pipeline::Costs& otherwise) const;
  // As one vector and back, to add totals over ranks.
  std::vector<double> flat() const;
  static OpTotals from_flat(const std::vector<double>& v);
};

// The costs pipeline::simulate's per-(rank, chunk) form takes, as measured:
// by_cell[r][c] holds the ops of pipeline rank r's local chunk c (an FB unit
// on its forward half's chunk); a kind that a cell never ran takes `all`'s
// mean. Per cell, not per stage: DualPipe runs each stage on two ranks, and
// the two need not run equally fast.
std::vector<std::vector<pipeline::Costs>> cell_costs(
    const std::vector<std::vector<OpTotals>>& by_cell, const OpTotals& all);

struct TimelineReport {
  std::string svg;          // a standalone SVG document
  double measured_ms = 0;   // the step's makespan as measured
  double simulated_ms = 0;  // the simulator's makespan from the op costs per rank and chunk
  double simulated_one_cost_ms = 0;  // the same with one cost per kind for every stage
  pipeline::Costs costs;             // the measured mean op costs (ms per chunk)
  // The schedule replayed with each op taking its measured time and no
  // latency between ranks: measured_ms - replayed_ms is what the op times
  // do not explain (hand-offs, wake-ups), handoff_ms that as a latency per
  // hand-off (the p2p at which the replay takes measured_ms).
  double replayed_ms = 0, handoff_ms = 0;
};

// One step of one pipeline, times[rank][op] on one clock: the span from its
// first op's start to its last op's end, the schedule replayed with every op
// taking its measured time and no latency between ranks, and the latency per
// hand-off at which that replay takes the span (what the op times leave
// unexplained: transfers, wake-ups of a rank that waited).
struct StepReplay {
  double span_ms = 0, replayed_ms = 0, handoff_ms = 0;
  // Measured directly, not fitted: the median of (an op's start - the end
  // of its input's producer on another rank) over the ops that waited for
  // such an input (started after it and after their rank's previous op),
  // and how many did.
  double waited_ms = 0;
  int waits = 0;
  // The mean time between an op with no input from another rank and its
  // rank's previous op (the executor's own work between two ops).
  double ready_gap_ms = 0;
};
StepReplay replay_step(const pipeline::Schedule& schedule,
                       const std::vector<std::vector<pipeline::OpTime>>& times);

// times[rank][op]: start and end in ms of every op of schedule.ops[rank]
// (one clock for all ranks: ranks of one host share it); comm[rank] (empty,
// or one list per rank): the EP comm calls inside them, on the same clock,
// drawn as bars in the ops.
TimelineReport pipeline_timeline(const pipeline::Schedule& schedule,
                                 const std::vector<std::vector<pipeline::OpTime>>& times,
                                 const std::vector<std::vector<pipeline::OpTime>>& comm = {});

}  // namespace epx::train
