// choose_schedule(): simulate every schedule the shape allows, with the
// per-stage costs scaled to each schedule's chunks, and keep the fastest one
// whose activation peak fits the budget.
#include <algorithm>
#include <sstream>
#include <string>
#include <vector>

#include <epx/pipeline_tools.hpp>

#include "core/check.hpp"

namespace epx::pipeline {

namespace {

constexpr ScheduleKind kAll[] = {ScheduleKind::gpipe, ScheduleKind::one_f_one_b,
                                 ScheduleKind::zb_h1, ScheduleKind::dualpipe,
                                 ScheduleKind::dualpipe_v};

// Ties go to fewer weight copies, then to less activation memory.
bool better(const AutoCandidate& a, int a_copies, const AutoCandidate& b, int b_copies) {
  constexpr double kEps = 1e-9;
  if (a.makespan < b.makespan - kEps) return true;
  if (a.makespan > b.makespan + kEps) return false;
  if (a_copies != b_copies) return a_copies < b_copies;
  return a.peak_activations < b.peak_activations - kEps;
}

std::string summary(const std::vector<AutoCandidate>& all) {
  std::ostringstream os;
  const char* sep = "";
  for (const AutoCandidate& c : all) {
    os << sep << to_string(c.kind) << ' ';
    if (!c.possible) {
      os << "impossible";
    } else {
      os << "makespan " << c.makespan << ", peak " << c.peak_activations;
      if (!c.fits) os << " over budget";
    }
    sep = "; ";
  }
  return os.str();
}

}  // namespace

AutoChoice choose_schedule(const AutoRequest& request) {
  EPX_CHECK(request.memory_budget >= 0, InvalidArgument,
            "auto: memory_budget = ", request.memory_budget, ", expected >= 0 (0: no limit)");
  AutoChoice best;
  int best_copies = 0;
  int chosen = -1;  // index into best.candidates
  for (ScheduleKind kind : kAll) {
    AutoCandidate c;
    c.kind = kind;
    Schedule schedule;
    try {
      schedule = make_schedule(kind, {request.ranks, request.microbatches});
    } catch (const Error& e) {
      c.note = e.what();
      best.candidates.push_back(c);
      continue;
    }
    c.possible = true;
    const Costs costs = scale_costs(schedule, request.per_stage);
    Simulation sim = simulate(schedule, costs);
    c.makespan = sim.makespan;
    const double unit = schedule.chunk_fraction * schedule.ranks;
    for (int peak : sim.peak_activations)
      c.peak_activations = std::max(c.peak_activations, peak * unit);
    c.fits = request.memory_budget <= 0 || c.peak_activations <= request.memory_budget + 1e-9;
    if (!c.fits) {
      c.note = core::concat("peak activations ", c.peak_activations, " exceed the budget ",
                            request.memory_budget);
    }
    best.candidates.push_back(c);
    if (c.fits &&
        (chosen < 0 || better(c, sim.param_copies, best.candidates[chosen], best_copies))) {
      chosen = static_cast<int>(best.candidates.size()) - 1;
      best_copies = sim.param_copies;
      best.schedule = std::move(schedule);
      best.costs = costs;
      best.simulation = std::move(sim);
    }
  }
  EPX_CHECK(chosen >= 0, InvalidArgument, "auto: no schedule for ", request.ranks, " ranks and ",
            request.microbatches, " micro-batches fits a memory budget of ", request.memory_budget,
            " (", summary(best.candidates), ")");
  const AutoCandidate& pick = best.candidates[chosen];
  std::ostringstream why;
  why << to_string(pick.kind) << ": least makespan (" << pick.makespan << ") of the schedules";
  if (request.memory_budget > 0)
    why << " whose peak activations fit the budget of " << request.memory_budget;
  why << ", with peak activations " << pick.peak_activations << " (micro-batches x 1/"
      << request.ranks << " of the model) and " << best_copies << " weight cop"
      << (best_copies == 1 ? "y" : "ies") << "; " << summary(best.candidates);
  best.reason = why.str();
  return best;
}

}  // namespace epx::pipeline
