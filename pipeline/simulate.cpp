// simulate(): op durations from the costs, the replay's start and end times,
// then what they add up to per rank (busy, bubble, live activations).
#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include "core/check.hpp"
#include "pipeline/replay.hpp"

namespace epx::pipeline {

namespace {

// `where` names the entry in a message: "" for the one Costs, else its stage.
void check_costs(const Costs& c, const std::string& where) {
  EPX_CHECK(c.f >= 0 && c.b >= 0 && c.w >= 0 && c.comm >= 0 && c.p2p >= 0, InvalidArgument,
            "simulate: costs", where, " must not be negative (f = ", c.f, ", b = ", c.b,
            ", w = ", c.w, ", comm = ", c.comm, ", p2p = ", c.p2p, ")");
  EPX_CHECK(c.w <= c.b, InvalidArgument, "simulate: w = ", c.w, " exceeds b = ", c.b, where,
            " (W is the weight-gradient part of the full backward B)");
}

// The costs of the stages an op's pieces run: the forward half's (or the
// op's) and, for an FB unit, the backward half's.
struct OpCosts {
  const Costs& c;   // the op's stage (an FB unit: its forward half's)
  const Costs& cb;  // an FB unit: its backward half's stage; else c
};

// An FB unit hides the forward's all-to-all behind the backward's compute and
// the backward's all-to-all behind the forward's, each as far as it lasts.
double fb_hidden(const OpCosts& k) {
  return std::min(k.c.comm, k.cb.b) + std::min(k.cb.comm, k.c.f);
}

double duration(const OpCosts& k, const Op& op) {
  const Costs& c = k.c;
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
      return (c.fb < 0 ? c.f + k.cb.b : c.fb) + c.comm + k.cb.comm - fb_hidden(k);
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

namespace {

// A validated schedule and checked costs, table[rank][chunk].
Simulation play(const Schedule& schedule, const std::vector<std::vector<Costs>>& table) {
  const auto costs_of = [&](int rank, const Op& op) {
    const std::vector<Costs>& mine = table[static_cast<std::size_t>(rank)];
    const Costs& c = mine[static_cast<std::size_t>(op.chunk)];
    return OpCosts{c, op.kind == OpKind::FB ? mine[static_cast<std::size_t>(op.b_chunk)] : c};
  };
  const detail::Replay run = detail::replay(
      schedule, [&](int rank, const Op& op) { return duration(costs_of(rank, op), op); },
      table[0][0].p2p);
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
      const Op& op = schedule.ops[r][i];
      sim.busy[r] += sim.times[r][i].end - sim.times[r][i].start;
      sim.makespan = std::max(sim.makespan, sim.times[r][i].end);
      if (op.kind == OpKind::FB) sim.comm_hidden[r] += fb_hidden(costs_of(static_cast<int>(r), op));
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

// Every entry checked, naming it by `name(i)`, all with one p2p.
template <class Name>
void check_entries(const std::vector<Costs>& v, const Name& name, double p2p) {
  for (std::size_t i = 0; i < v.size(); ++i) {
    check_costs(v[i], name(i));
    EPX_CHECK(v[i].p2p == p2p, InvalidArgument, "simulate: p2p = ", v[i].p2p, name(i), " but ", p2p,
              " elsewhere (one latency between any two ranks)");
  }
}

}  // namespace

Simulation simulate(const Schedule& schedule, const Costs& costs) {
  check_costs(costs, "");
  validate(schedule);
  std::vector<std::vector<Costs>> table;
  for (const std::vector<int>& chunks : schedule.stage_of) table.emplace_back(chunks.size(), costs);
  return play(schedule, table);
}

Simulation simulate(const Schedule& schedule, const std::vector<Costs>& stage_costs) {
  validate(schedule);
  EPX_CHECK(stage_costs.size() == static_cast<std::size_t>(schedule.stages), InvalidArgument,
            "simulate: ", stage_costs.size(), " stage costs for a schedule of ", schedule.stages,
            " stages");
  check_entries(
      stage_costs, [](std::size_t s) { return " for stage " + std::to_string(s); },
      stage_costs[0].p2p);
  std::vector<std::vector<Costs>> table;
  for (const std::vector<int>& chunks : schedule.stage_of) {
    table.emplace_back();
    for (int stage : chunks) table.back().push_back(stage_costs[static_cast<std::size_t>(stage)]);
  }
  return play(schedule, table);
}

Simulation simulate(const Schedule& schedule, const std::vector<std::vector<Costs>>& costs) {
  validate(schedule);
  EPX_CHECK(costs.size() == schedule.stage_of.size(), InvalidArgument, "simulate: costs for ",
            costs.size(), " ranks, the schedule has ", schedule.stage_of.size());
  for (std::size_t r = 0; r < costs.size(); ++r) {
    EPX_CHECK(costs[r].size() == schedule.stage_of[r].size(), InvalidArgument,
              "simulate: costs for ", costs[r].size(), " chunks on rank ", r, ", it holds ",
              schedule.stage_of[r].size());
    check_entries(
        costs[r],
        [r](std::size_t c) {
          return " for rank " + std::to_string(r) + " chunk " + std::to_string(c);
        },
        costs[0][0].p2p);
  }
  return play(schedule, costs);
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
