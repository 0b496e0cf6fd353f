#include "train/pipeline_timeline.hpp"

#include <algorithm>
#include <cstdio>
#include <limits>
#include <utility>

#include "core/check.hpp"
#include "core/stopwatch.hpp"
#include "pipeline/replay.hpp"

namespace epx::train {

namespace {

// Nests a standalone SVG document at height offset `y`; adds its height to `y`.
std::string nested(const std::string& doc, double& y) {
  const auto at = doc.find("<svg");
  EPX_CHECK(at != std::string::npos, Internal, "pipeline_timeline: not an SVG document");
  const auto h = doc.find("height=\"", at);
  const double height = h == std::string::npos ? 400 : std::stod(doc.substr(h + 8));
  std::string out = doc;
  out.insert(at + 4, " y=\"" + std::to_string(y) + "\"");
  y += height;
  return out;
}

std::string caption(double y, const std::string& text) {
  return "<text x=\"10\" y=\"" + std::to_string(y + 18) +
         "\" font-family=\"sans-serif\" font-size=\"15\" font-weight=\"bold\">" + text +
         "</text>\n";
}

int index(pipeline::OpKind kind) {
  return static_cast<int>(kind);
}

// The first op's start and the last op's end, with times checked against
// the schedule's shape (`who` names the caller in the error).
std::pair<double, double> time_span(const pipeline::Schedule& schedule,
                                    const std::vector<std::vector<pipeline::OpTime>>& times,
                                    const char* who) {
  EPX_CHECK(times.size() == schedule.ops.size(), InvalidArgument, who, ": times of ", times.size(),
            " ranks, the schedule has ", schedule.ops.size());
  double t0 = std::numeric_limits<double>::infinity(), t1 = -t0;
  for (std::size_t r = 0; r < times.size(); ++r) {
    EPX_CHECK(times[r].size() == schedule.ops[r].size(), InvalidArgument, who, ": rank ", r,
              " timed ", times[r].size(), " ops, its schedule has ", schedule.ops[r].size());
    for (const pipeline::OpTime& t : times[r]) t0 = std::min(t0, t.start), t1 = std::max(t1, t.end);
  }
  return {t0, t1};
}

// The step played again with every op taking the time it took (times as
// from the step's start) and each hand-off between ranks taking p2p ms.
double replayed(const pipeline::Schedule& schedule,
                const std::vector<std::vector<pipeline::OpTime>>& times, double p2p) {
  const pipeline::detail::Replay run = pipeline::detail::replay(
      schedule,
      [&](int rank, const pipeline::Op& op) {
        // replay passes the schedule's own ops: the index is op's place.
        const auto r = static_cast<std::size_t>(rank);
        const auto i = static_cast<std::size_t>(&op - schedule.ops[r].data());
        EPX_CHECK(i < times[r].size(), Internal, "pipeline_timeline: op ", i, " of rank ", r,
                  " outside its ", times[r].size(), " times");
        return times[r][i].end - times[r][i].start;
      },
      p2p);
  EPX_CHECK(run.complete, Internal, "pipeline_timeline: replay stuck: ", run.blocked);
  double end = 0;
  for (const auto& rank : run.times)
    for (const pipeline::OpTime& t : rank) end = std::max(end, t.end);
  return end;
}

// The hand-off latency at which the replay takes as long as the step did
// (the makespan does not fall as p2p grows): what the gap between the
// measured step and its op times amounts to per hand-off.
double fitted_handoff_ms(const pipeline::Schedule& schedule,
                         const std::vector<std::vector<pipeline::OpTime>>& times,
                         double measured_ms) {
  if (replayed(schedule, times, 0) >= measured_ms) return 0;
  double lo = 0, hi = measured_ms;
  for (int i = 0; i < 40; ++i) {
    const double mid = 0.5 * (lo + hi);
    (replayed(schedule, times, mid) < measured_ms ? lo : hi) = mid;
  }
  return 0.5 * (lo + hi);
}

// The measured hand-offs: for every op that waited for an input from another
// rank (it started after its rank's previous op ended and after that input's
// producer ended), its start less the producer's end. The time between one
// rank finishing a piece and the next starting on it, with neither computing
// anything else: a transfer, and the wake-up of a rank that sleeps while it
// waits.
// And in `ready_gaps`, for every op with no input from another rank, its
// start less the end of its rank's previous op (or of a local input, if
// later): the executor's own time between two ops.
std::vector<double> waited_handoffs(const pipeline::Schedule& schedule,
                                    const std::vector<std::vector<pipeline::OpTime>>& times,
                                    std::vector<double>& ready_gaps) {
  using pipeline::OpKind;
  const auto at = [&](int mb, int stage) {
    return static_cast<std::size_t>(mb) * static_cast<std::size_t>(schedule.stages) +
           static_cast<std::size_t>(stage);
  };
  // Where each forward and backward piece was computed: (rank, op index).
  const std::size_t n =
      static_cast<std::size_t>(schedule.microbatches) * static_cast<std::size_t>(schedule.stages);
  std::vector<std::pair<int, std::size_t>> f_at(n, {-1, 0}), b_at(n, {-1, 0});
  for (std::size_t r = 0; r < schedule.ops.size(); ++r)
    for (std::size_t i = 0; i < schedule.ops[r].size(); ++i) {
      pipeline::detail::Piece pieces[2];
      const int k = pipeline::detail::pieces_of(schedule.ops[r][i], pieces);
      for (int p = 0; p < k; ++p) {
        const int stage = schedule.stage_of[r][static_cast<std::size_t>(pieces[p].chunk)];
        if (pieces[p].kind == OpKind::F) f_at[at(pieces[p].mb, stage)] = {static_cast<int>(r), i};
        if (pieces[p].kind == OpKind::B || pieces[p].kind == OpKind::Bi)
          b_at[at(pieces[p].mb, stage)] = {static_cast<int>(r), i};
      }
    }
  std::vector<double> waits;
  for (std::size_t r = 0; r < schedule.ops.size(); ++r)
    for (std::size_t i = 0; i < schedule.ops[r].size(); ++i) {
      pipeline::detail::Piece pieces[2];
      const int k = pipeline::detail::pieces_of(schedule.ops[r][i], pieces);
      double remote = -std::numeric_limits<double>::infinity(),
             local = i > 0 ? times[r][i - 1].end : 0;
      bool from_other = false;
      for (int p = 0; p < k; ++p) {
        const int stage = schedule.stage_of[r][static_cast<std::size_t>(pieces[p].chunk)];
        std::pair<int, std::size_t> src{-1, 0};
        if (pieces[p].kind == OpKind::F && stage > 0) src = f_at[at(pieces[p].mb, stage - 1)];
        if ((pieces[p].kind == OpKind::B || pieces[p].kind == OpKind::Bi) &&
            stage < schedule.stages - 1)
          src = b_at[at(pieces[p].mb, stage + 1)];
        if (src.first < 0) continue;
        const double end = times[static_cast<std::size_t>(src.first)][src.second].end;
        if (src.first == static_cast<int>(r)) {
          local = std::max(local, end);
        } else {
          remote = std::max(remote, end);
          from_other = true;
        }
      }
      // Only where the input from another rank came last: then the op waited for it.
      // An input from another rank that came before the local ones may
      // still have delayed the op (its transfer): neither list takes it.
      if (from_other && remote > local) {
        waits.push_back(std::max(0.0, times[r][i].start - remote));
      } else if (!from_other && i > 0) {
        ready_gaps.push_back(std::max(0.0, times[r][i].start - local));
      }
    }
  return waits;
}

}  // namespace

void OpTotals::add(pipeline::OpKind kind, double op_ms, double op_ep_ms, double op_compute_ms,
                   double op_hidden_ms) {
  const int k = index(kind);
  ms[k] += op_ms;
  ep_ms[k] += op_ep_ms;
  compute_ms[k] += op_compute_ms;
  hidden_ms[k] += op_hidden_ms;
  count[k] += 1;
}

double OpTotals::mean(pipeline::OpKind kind, double otherwise) const {
  const int k = index(kind);
  return count[k] > 0 ? ms[k] / count[k] : otherwise;
}

double OpTotals::mean_ep(pipeline::OpKind kind) const {
  const int k = index(kind);
  return count[k] > 0 ? ep_ms[k] / count[k] : 0;
}

double OpTotals::mean_compute(pipeline::OpKind kind) const {
  const int k = index(kind);
  return count[k] > 0 ? compute_ms[k] / count[k] : 0;
}

double OpTotals::mean_hidden(pipeline::OpKind kind) const {
  const int k = index(kind);
  return count[k] > 0 ? hidden_ms[k] / count[k] : 0;
}

pipeline::Costs OpTotals::costs() const {
  using pipeline::OpKind;
  pipeline::Costs none;  // no op ran: F 1, no W, B 2 F, no FB unit
  none.f = mean(OpKind::F, 1);
  none.w = mean(OpKind::W, 0);
  none.b = 2 * none.f + none.w;
  none.fb = -1;
  return costs(none);
}

pipeline::Costs OpTotals::costs(const pipeline::Costs& otherwise) const {
  using pipeline::OpKind;
  pipeline::Costs c = otherwise;
  c.f = mean(OpKind::F, otherwise.f);
  c.w = mean(OpKind::W, otherwise.w);
  c.b = count[index(OpKind::B)] > 0    ? mean(OpKind::B, 0)
        : count[index(OpKind::Bi)] > 0 ? mean(OpKind::Bi, 0) + c.w
                                       : otherwise.b;
  // A schedule with both full (B) and split (Bi + W) backwards prices Bi as
  // b - w; measured on a loaded host a W can outlast the B ops' mean, and
  // the simulator refuses w > b: Bi then costs nothing.
  c.w = std::min(c.w, c.b);
  c.fb = mean(OpKind::FB, otherwise.fb);
  return c;
}

void OpTotals::add(const OpTotals& other) {
  for (int k = 0; k < kKinds; ++k) {
    ms[k] += other.ms[k];
    ep_ms[k] += other.ep_ms[k];
    compute_ms[k] += other.compute_ms[k];
    hidden_ms[k] += other.hidden_ms[k];
    count[k] += other.count[k];
  }
}

std::vector<std::vector<pipeline::Costs>> cell_costs(
    const std::vector<std::vector<OpTotals>>& by_cell, const OpTotals& all) {
  const pipeline::Costs mean = all.costs();
  std::vector<std::vector<pipeline::Costs>> out;
  for (const std::vector<OpTotals>& rank : by_cell) {
    out.emplace_back();
    for (const OpTotals& t : rank) out.back().push_back(t.costs(mean));
  }
  return out;
}

std::vector<double> OpTotals::flat() const {
  std::vector<double> v;
  for (const auto* a : {&ms, &ep_ms, &compute_ms, &hidden_ms, &count})
    v.insert(v.end(), a->begin(), a->end());
  return v;
}

OpTotals OpTotals::from_flat(const std::vector<double>& v) {
  EPX_CHECK_EQ(v.size(), std::size_t{5 * kKinds}, Internal, "OpTotals::from_flat");
  OpTotals t;
  std::size_t at = 0;
  for (auto* a : {&t.ms, &t.ep_ms, &t.compute_ms, &t.hidden_ms, &t.count}) {
    std::copy(v.begin() + at, v.begin() + at + kKinds, a->begin());
    at += kKinds;
  }
  return t;
}

StepReplay replay_step(const pipeline::Schedule& schedule,
                       const std::vector<std::vector<pipeline::OpTime>>& times) {
  const auto [t0, t1] = time_span(schedule, times, "replay_step");
  StepReplay out;
  out.span_ms = t1 - t0;
  out.replayed_ms = replayed(schedule, times, 0);
  out.handoff_ms = fitted_handoff_ms(schedule, times, out.span_ms);
  std::vector<double> gaps;
  const std::vector<double> waits = waited_handoffs(schedule, times, gaps);
  out.waits = static_cast<int>(waits.size());
  out.waited_ms = core::median(waits);
  for (const double g : gaps) out.ready_gap_ms += g / static_cast<double>(gaps.size());
  return out;
}

TimelineReport pipeline_timeline(const pipeline::Schedule& schedule,
                                 const std::vector<std::vector<pipeline::OpTime>>& times,
                                 const std::vector<std::vector<pipeline::OpTime>>& comm) {
  const auto [t0, t1] = time_span(schedule, times, "pipeline_timeline");
  // The measured step as a Simulation, from its first op's start.
  pipeline::Simulation measured;
  measured.makespan = t1 - t0;
  OpTotals totals;
  std::vector<std::vector<OpTotals>> by_cell;
  for (const std::vector<int>& chunks : schedule.stage_of) by_cell.emplace_back(chunks.size());
  for (std::size_t r = 0; r < times.size(); ++r) {
    double busy = 0;
    measured.times.emplace_back();
    for (std::size_t i = 0; i < times[r].size(); ++i) {
      const pipeline::OpTime t{times[r][i].start - t0, times[r][i].end - t0};
      measured.times.back().push_back(t);
      const double d = t.end - t.start;
      busy += d;
      const pipeline::Op& op = schedule.ops[r][i];
      totals.add(op.kind, d, 0, d, 0);
      by_cell[r][static_cast<std::size_t>(op.chunk)].add(op.kind, d, 0, d, 0);
    }
    measured.busy.push_back(busy);
    measured.bubble.push_back(measured.makespan - busy);
    measured.max_bubble = std::max(measured.max_bubble, measured.makespan - busy);
  }
  TimelineReport rep;
  rep.measured_ms = measured.makespan;
  rep.costs = totals.costs();
  const pipeline::Simulation sim = pipeline::simulate(schedule, cell_costs(by_cell, totals));
  rep.simulated_ms = sim.makespan;
  rep.simulated_one_cost_ms = pipeline::simulate(schedule, rep.costs).makespan;
  const StepReplay again = replay_step(schedule, measured.times);
  rep.replayed_ms = again.replayed_ms;
  rep.handoff_ms = again.handoff_ms;

  double y = 0;
  std::string body;
  char text[256];
  std::snprintf(text, sizeof text,
                "measured: one step, %.1f ms (times in ms); its ops replayed at their times with "
                "no latency between ranks: %.1f ms, the rest is %.2f ms per hand-off",
                rep.measured_ms, rep.replayed_ms, rep.handoff_ms);
  body += caption(y, text);
  y += 26;
  std::vector<std::vector<pipeline::OpTime>> pieces;
  for (const auto& rank : comm) {
    pieces.emplace_back();
    for (const pipeline::OpTime& p : rank) pieces.back().push_back({p.start - t0, p.end - t0});
  }
  body += nested(pipeline::timeline_svg(schedule, measured, pieces), y);
  std::snprintf(
      text, sizeof text,
      "simulated from the op costs measured per rank and chunk (means F %.2f, B %.2f, W %.2f, "
      "FB %.2f ms): %.1f ms (one cost per kind: %.1f ms)",
      rep.costs.f, rep.costs.b, rep.costs.w, rep.costs.fb, rep.simulated_ms,
      rep.simulated_one_cost_ms);
  body += caption(y, text);
  y += 26;
  body += nested(pipeline::timeline_svg(schedule, sim), y);
  rep.svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"1290\" height=\"" +
            std::to_string(y) + "\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n" +
            body + "</svg>\n";
  return rep;
}

}  // namespace epx::train
