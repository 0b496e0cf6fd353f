// simulate(): op durations from the costs, the replay's start and end times,
// then what they add up to per rank (busy, bubble, live activations).
#include <algorithm>
#include <map>

#include "core/check.hpp"
#include "pipeline/replay.hpp"

namespace epx::pipeline {

namespace {

void check_costs(const Costs& c) {
  EPX_CHECK(c.f >= 0 && c.b >= 0 && c.w >= 0 && c.comm >= 0 && c.p2p >= 0, InvalidArgument,
            "simulate: costs must not be negative (f = ", c.f, ", b = ", c.b, ", w = ", c.w,
            ", comm = ", c.comm, ", p2p = ", c.p2p, ")");
  EPX_CHECK(c.w <= c.b, InvalidArgument, "simulate: w = ", c.w, " exceeds b = ", c.b,
            " (W is the weight-gradient part of the full backward B)");
}

// An FB unit hides the forward's all-to-all behind the backward's compute and
// the backward's all-to-all behind the forward's, each as far as it lasts.
double fb_hidden(const Costs& c) {
  return std::min(c.comm, c.b) + std::min(c.comm, c.f);
}

double duration(const Costs& c, const Op& op) {
  switch (op.kind) {
    case OpKind::F:
      return c.f + c.comm;
    case OpKind::B:
      return c.b + c.comm;
    case OpKind::Bi:
      return c.b - c.w + c.comm;
    case OpKind::W:
      return c.w;
    case OpKind::FB:
      return (c.fb < 0 ? c.f + c.b : c.fb) + 2 * c.comm - fb_hidden(c);
  }
  return 0.0;
}

// Live micro-batch-chunks on one rank, in op order: an F adds one when it
// starts; its B, or the W after its Bi, removes it when it ends.
int peak_live(const std::vector<Op>& ops) {
  int live = 0, peak = 0;
  for (const Op& op : ops) {
    detail::Piece pieces[2];
    const int n = detail::pieces_of(op, pieces);
    for (int i = 0; i < n; ++i) live += pieces[i].kind == OpKind::F;
    peak = std::max(peak, live);
    for (int i = 0; i < n; ++i) live -= pieces[i].kind == OpKind::B || pieces[i].kind == OpKind::W;
  }
  return peak;
}

int param_copies(const Schedule& s) {
  std::map<int, int> holders;
  int most = 0;
  for (const std::vector<int>& row : s.stage_of) {
    for (int stage : row) most = std::max(most, ++holders[stage]);
  }
  return most;
}

}  // namespace

Simulation simulate(const Schedule& schedule, const Costs& costs) {
  check_costs(costs);
  validate(schedule);
  const detail::Replay run = detail::replay(
      schedule, [&](int, const Op& op) { return duration(costs, op); }, costs.p2p);
  EPX_CHECK(run.complete, Internal, "simulate(", to_string(schedule.kind),
            "): replay stuck after validate passed: ", run.blocked);

  Simulation sim;
  sim.times = run.times;
  const std::size_t ranks = schedule.ops.size();
  sim.busy.assign(ranks, 0.0);
  sim.comm_hidden.assign(ranks, 0.0);
  sim.peak_activations.assign(ranks, 0);
  for (std::size_t r = 0; r < ranks; ++r) {
    for (std::size_t i = 0; i < schedule.ops[r].size(); ++i) {
      sim.busy[r] += sim.times[r][i].end - sim.times[r][i].start;
      sim.makespan = std::max(sim.makespan, sim.times[r][i].end);
      if (schedule.ops[r][i].kind == OpKind::FB) sim.comm_hidden[r] += fb_hidden(costs);
    }
    sim.peak_activations[r] = peak_live(schedule.ops[r]);
    sim.total_comm_hidden += sim.comm_hidden[r];
  }
  sim.bubble.resize(ranks);
  for (std::size_t r = 0; r < ranks; ++r) {
    sim.bubble[r] = sim.makespan - sim.busy[r];
    sim.max_bubble = std::max(sim.max_bubble, sim.bubble[r]);
  }
  sim.param_copies = param_copies(schedule);
  return sim;
}

Costs scale_costs(const Schedule& schedule, const Costs& per_stage) {
  const double k = schedule.chunk_fraction * schedule.ranks;
  Costs c = per_stage;
  c.f *= k;
  c.b *= k;
  c.w *= k;
  if (c.fb >= 0) c.fb *= k;
  c.comm *= k;
  return c;
}

}  // namespace epx::pipeline
