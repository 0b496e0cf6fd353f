// simulate() against the published results (DualPipe README table, the
// DeepSeek-V3 report's 8-rank 20-micro-batch example) and against hand-worked
// small cases: makespan, bubbles, activation peaks, weight copies, hidden comm.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <epx/error.hpp>
#include <epx/pipeline_tools.hpp>
#include <string>
#include <tuple>
#include <vector>

namespace epx::pipeline {
namespace {

Costs published_costs() {
  Costs c;
  c.f = 1;
  c.b = 2;
  c.w = 1;
  c.fb = 3;
  return c;
}

int max_peak(const Simulation& s) {
  return *std::max_element(s.peak_activations.begin(), s.peak_activations.end());
}

TEST(PipelineSimulate, DualPipeBeats1F1BOnThePublishedExample) {
  // PP = 8, 20 micro-batches, F = 1, B = 2, W = 1, F&B = 3.
  const Costs c = published_costs();
  EXPECT_DOUBLE_EQ(simulate(one_f_one_b(8, 20), c).makespan, 81.0);
  EXPECT_DOUBLE_EQ(simulate(dualpipe(8, 20), c).makespan, 66.0);
}

// The published formulas are exact where their figures' assumptions hold: a
// forward as long as an input-gradient backward (F = B - W) and W <= F.
// Shapes: PP ranks (DualPipeV: PP stages on PP/2 ranks), M = 2 PP + 2 extra.
class PublishedBubbles
    : public ::testing::TestWithParam<std::tuple<int, int, std::array<double, 4>>> {};

TEST_P(PublishedBubbles, MatchTheFormulas) {
  const auto [pp, extra, fbwx] = GetParam();
  const int m = 2 * pp + 2 * extra;
  const Costs c{fbwx[0], fbwx[1], fbwx[2], fbwx[3], 0, 0};
  const Simulation f1b = simulate(one_f_one_b(pp, m), c);
  const Simulation zb = simulate(zb_h1(pp, m), c);
  const Simulation dp = simulate(dualpipe(pp, m), c);
  const Simulation dv = simulate(dualpipe_v(pp / 2, m), c);
  EXPECT_DOUBLE_EQ(f1b.max_bubble, (pp - 1) * (c.f + c.b));
  EXPECT_DOUBLE_EQ(zb.max_bubble, (pp - 1) * (c.f + c.b - 2 * c.w));
  const double dual = (pp / 2 - 1) * (c.fb + c.b - 3 * c.w);
  EXPECT_DOUBLE_EQ(dp.max_bubble, dual);
  EXPECT_DOUBLE_EQ(dv.max_bubble, dual);
  // Activations per rank: PP (1F1B, ZB1P), PP + 1 (DualPipe, DualPipeV).
  EXPECT_EQ(max_peak(f1b), pp);
  EXPECT_EQ(max_peak(zb), pp);
  EXPECT_EQ(max_peak(dp), pp + 1);
  EXPECT_EQ(max_peak(dv), pp + 1);
  // Weights: 2x for DualPipe's mirrored stages, 1x otherwise.
  EXPECT_EQ(f1b.param_copies, 1);
  EXPECT_EQ(zb.param_copies, 1);
  EXPECT_EQ(dp.param_copies, 2);
  EXPECT_EQ(dv.param_copies, 1);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, PublishedBubbles,
    ::testing::Combine(::testing::Values(2, 4, 6, 8), ::testing::Values(0, 1, 5),
                       ::testing::Values(std::array<double, 4>{1, 2, 1, 3},
                                         std::array<double, 4>{1.5, 2.5, 1, 3.5},
                                         std::array<double, 4>{2, 3, 1, 5},
                                         std::array<double, 4>{1, 2, 1, 2.5})));

TEST(PipelineSimulate, FormulasAreOnlyApproximateOutsideTheirAssumptions) {
  // W > F: the r weight grads ZB-H1 defers on rank r no longer fit the gaps.
  const Costs slow_w{1, 3, 1.5, 4, 0, 0};
  EXPECT_GT(simulate(zb_h1(4, 8), slow_w).max_bubble, 3 * (1 + 3 - 2 * 1.5));
  // F longer than Bi: DualPipe's bubble exceeds the formula.
  const Costs slow_f{3, 2, 1, 5, 0, 0};
  EXPECT_GT(simulate(dualpipe(4, 8), slow_f).max_bubble, 1 * (5 + 2 - 3 * 1));
}

TEST(PipelineSimulate, GPipeHoldsEveryMicroBatch) {
  const Simulation s = simulate(gpipe(4, 6), published_costs());
  EXPECT_DOUBLE_EQ(s.makespan, 6 * 3 + 3 * 3);  // m(F+B) + (p-1)(F+B)
  EXPECT_EQ(max_peak(s), 6);
}

TEST(PipelineSimulate, EveryRankIsBusyForItsShare) {
  // Each rank computes one F and one backward per micro-batch and chunk.
  const Costs c = published_costs();
  const Simulation s = simulate(dualpipe(4, 12), c);
  for (double busy : s.busy) EXPECT_DOUBLE_EQ(busy, 12 * (c.f + c.b));
}

TEST(PipelineSimulate, P2PLatencyAddsOnEveryHop) {
  Costs c = published_costs();
  c.p2p = 0.5;
  // GPipe's critical path: m(F+B) + (p-1)(F+B) plus 2(p-1) hops, one each way.
  EXPECT_DOUBLE_EQ(simulate(gpipe(4, 8), c).makespan, 8 * 3 + 3 * 3 + 2 * 3 * 0.5);
  // 1F1B keeps no slack in its steady state: rank 0 has p (F, B) pairs to
  // cover each gradient's round trip, so latency also stalls the middle.
  EXPECT_GT(simulate(one_f_one_b(4, 8), c).makespan, 8 * 3 + 3 * 3 + 2 * 3 * 0.5);
  // Same-rank inputs pay no latency: DualPipeV's turn at the last rank.
  c.p2p = 0;
  const double flat = simulate(dualpipe_v(1, 4), c).makespan;
  c.p2p = 10;
  EXPECT_DOUBLE_EQ(simulate(dualpipe_v(1, 4), c).makespan, flat);
}

TEST(PipelineSimulate, OverlappedUnitsHideAllToAll) {
  Costs c = published_costs();
  c.comm = 0.5;
  const Simulation seq = simulate(one_f_one_b(4, 8), c);
  EXPECT_DOUBLE_EQ(seq.total_comm_hidden, 0.0);
  EXPECT_DOUBLE_EQ(seq.makespan, (8 + 3) * (c.f + c.b + 2 * c.comm));
  const Simulation dp = simulate(dualpipe(4, 8), c);
  int fb_units = 0;
  for (const auto& ops : dualpipe(4, 8).ops) {
    fb_units +=
        std::count_if(ops.begin(), ops.end(), [](const Op& op) { return op.kind == OpKind::FB; });
  }
  ASSERT_GT(fb_units, 0);
  // comm 0.5 is shorter than both halves: each unit hides both all-to-alls.
  EXPECT_DOUBLE_EQ(dp.total_comm_hidden, fb_units * 2 * c.comm);
  // Longer comm than the forward: only F's length of the backward's comm hides.
  c.comm = 1.5;
  EXPECT_DOUBLE_EQ(simulate(dualpipe(4, 8), c).total_comm_hidden, fb_units * (1.5 + 1.0));
}

TEST(PipelineSimulate, BadCostsAreRejected) {
  Costs c = published_costs();
  c.w = 3;  // more than the whole backward
  EXPECT_THROW(simulate(zb_h1(2, 4), c), Error);
  c = published_costs();
  c.f = -1;
  EXPECT_THROW(simulate(one_f_one_b(2, 4), c), Error);
}

// Costs per stage: equal entries give the one-cost simulation exactly; unequal
// ones price each op by its stage, checked op by op against the rule
// written out here, and on a GPipe worked by hand.
TEST(PipelineSimulate, PerStageCostsEqualToOneCostAreTheSame) {
  Costs c = published_costs();
  c.comm = 0.25;
  c.p2p = 0.125;
  for (const Schedule& s :
       {gpipe(3, 5), one_f_one_b(4, 7), zb_h1(3, 6), dualpipe(4, 8), dualpipe_v(3, 6)}) {
    const Simulation one = simulate(s, c);
    const Simulation per = simulate(s, std::vector<Costs>(static_cast<std::size_t>(s.stages), c));
    EXPECT_EQ(per.makespan, one.makespan) << to_string(s.kind);
    EXPECT_EQ(per.total_comm_hidden, one.total_comm_hidden) << to_string(s.kind);
    for (std::size_t r = 0; r < one.times.size(); ++r)
      for (std::size_t i = 0; i < one.times[r].size(); ++i) {
        EXPECT_EQ(per.times[r][i].start, one.times[r][i].start);
        EXPECT_EQ(per.times[r][i].end, one.times[r][i].end);
      }
  }
}

// The rule an op's simulated duration follows: c prices its (forward)
// chunk, cb an FB unit's backward chunk; adds an FB unit's hidden comm.
double op_duration(const Op& op, const Costs& c, const Costs& cb, double& hidden) {
  switch (op.kind) {
    case OpKind::F:
      return c.f + c.comm;
    case OpKind::B:
      return c.b + c.comm;
    case OpKind::Bi:
      return c.b - c.w + c.comm;
    case OpKind::W:
      return c.w;
    case OpKind::FB: {
      const double h = std::min(c.comm, cb.b) + std::min(cb.comm, c.f);
      hidden += h;
      return (c.fb >= 0 ? c.fb : c.f + cb.b) + c.comm + cb.comm - h;
    }
  }
  return -1;
}

TEST(PipelineSimulate, PerStageCostsPriceEachOpByItsStage) {
  // Stages unlike each other (sizes not powers of two), some with comm, one
  // with a measured fb, the others with fb unset.
  const auto stage_costs = [](int stages) {
    std::vector<Costs> v;
    for (int s = 0; s < stages; ++s) {
      Costs c;
      c.f = 1.0 + 0.5 * s;
      c.b = 2.0 + 0.75 * s;
      c.w = 0.25 + 0.125 * s;
      c.comm = s % 2 ? 0.375 : 0.0;
      c.fb = s == 1 ? 2.5 : -1.0;
      v.push_back(c);
    }
    return v;
  };
  for (const Schedule& s : {one_f_one_b(3, 5), zb_h1(3, 5), dualpipe(4, 8), dualpipe_v(3, 6)}) {
    const std::vector<Costs> v = stage_costs(s.stages);
    const Simulation sim = simulate(s, v);
    double hidden = 0;
    for (std::size_t r = 0; r < s.ops.size(); ++r)
      for (std::size_t i = 0; i < s.ops[r].size(); ++i) {
        const Op& op = s.ops[r][i];
        const auto stage = [&](int chunk) {
          return v[static_cast<std::size_t>(s.stage_of[r][static_cast<std::size_t>(chunk)])];
        };
        const double want = op_duration(
            op, stage(op.chunk), stage(op.kind == OpKind::FB ? op.b_chunk : op.chunk), hidden);
        EXPECT_DOUBLE_EQ(sim.times[r][i].end - sim.times[r][i].start, want)
            << to_string(s.kind) << " rank " << r << " op " << i;
      }
    EXPECT_DOUBLE_EQ(sim.total_comm_hidden, hidden) << to_string(s.kind);
  }
  // Per rank and chunk: DualPipe's two copies of a stage priced apart; the
  // same table spelled per stage where the copies agree.
  {
    const Schedule s = dualpipe(4, 12);  // enough micro-batches for FB units
    const std::vector<Costs> v = stage_costs(s.stages);
    std::vector<std::vector<Costs>> table;
    for (const auto& chunks : s.stage_of) {
      table.emplace_back();
      for (int stage : chunks) table.back().push_back(v[static_cast<std::size_t>(stage)]);
    }
    EXPECT_EQ(simulate(s, table).makespan, simulate(s, v).makespan);
    table[1][1].f += 3;    // rank 1's second chunk forwards slower than its other copy
    table[0][1].b += 1.5;  // and rank 0's second chunk runs its backward slower
    const Simulation slow = simulate(s, table);
    const Costs& other_copy = v[static_cast<std::size_t>(s.stage_of[1][1])];
    for (std::size_t i = 0; i < s.ops[1].size(); ++i)
      if (s.ops[1][i].kind == OpKind::F && s.ops[1][i].chunk == 1) {
        EXPECT_DOUBLE_EQ(slow.times[1][i].end - slow.times[1][i].start,
                         other_copy.f + 3 + other_copy.comm);
      }
    // Every op priced by its own rank's cells: an FB unit's forward half by
    // table[r][chunk], its backward half by table[r][b_chunk].
    int fb_on_slow_cells = 0;
    for (std::size_t r = 0; r < s.ops.size(); ++r)
      for (std::size_t i = 0; i < s.ops[r].size(); ++i) {
        const Op& op = s.ops[r][i];
        const int b_chunk = op.kind == OpKind::FB ? op.b_chunk : op.chunk;
        double ignored = 0;
        const double want = op_duration(op, table[r][static_cast<std::size_t>(op.chunk)],
                                        table[r][static_cast<std::size_t>(b_chunk)], ignored);
        if (op.kind == OpKind::FB && ((r == 1 && op.chunk == 1) || (r == 0 && op.b_chunk == 1)))
          ++fb_on_slow_cells;
        EXPECT_DOUBLE_EQ(slow.times[r][i].end - slow.times[r][i].start, want)
            << "rank " << r << " op " << i << " " << to_string(op);
      }
    EXPECT_GT(fb_on_slow_cells, 0);  // the check above covered FB units on both slowed cells
    EXPECT_GT(slow.makespan, simulate(s, v).makespan);
  }
  // GPipe on 2 ranks, 2 micro-batches, stage 0 (f 1, b 2) and stage 1 (f 3,
  // b 4): rank 1 runs F0 1-4, F1 4-7, then its backwards 7-15; rank 0's last
  // backward waits for rank 1's last: 15 + 2 = 17.
  std::vector<Costs> two(2);
  two[0].f = 1, two[0].b = 2, two[0].w = 0;
  two[1].f = 3, two[1].b = 4, two[1].w = 0;
  EXPECT_DOUBLE_EQ(simulate(gpipe(2, 2), two).makespan, 17.0);
}

TEST(PipelineSimulate, PerStageCostsAreChecked) {
  const Schedule s = one_f_one_b(3, 4);
  std::vector<Costs> v(3, published_costs());
  const auto message = [&](const std::vector<Costs>& costs) {
    try {
      simulate(s, costs);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message({v[0], v[1]}).find("2 stage costs for a schedule of 3 stages"),
            std::string::npos);
  std::vector<Costs> bad = v;
  bad[2].f = -1;
  EXPECT_NE(message(bad).find("costs for stage 2 must not be negative"), std::string::npos);
  bad = v;
  bad[1].p2p = 0.5;
  EXPECT_NE(message(bad).find("p2p = 0.5 for stage 1 but 0 elsewhere"), std::string::npos);
  std::vector<std::vector<Costs>> table(3, std::vector<Costs>(1, published_costs()));
  std::string m;
  try {
    simulate(s, std::vector<std::vector<Costs>>(2, table[0]));
  } catch (const Error& e) {
    m = e.what();
  }
  EXPECT_NE(m.find("costs for 2 ranks, the schedule has 3"), std::string::npos) << m;
  table[1][0].b = -2;
  m.clear();
  try {
    simulate(s, table);
  } catch (const Error& e) {
    m = e.what();
  }
  EXPECT_NE(m.find("costs for rank 1 chunk 0 must not be negative"), std::string::npos) << m;
}

TEST(PipelineSimulate, AutoPicksTheFastestThatFits) {
  AutoRequest req;
  req.ranks = 8;
  req.microbatches = 20;
  req.per_stage = published_costs();
  const AutoChoice free_choice = choose_schedule(req);
  // DualPipe 66; DualPipeV's 16 half-size stages: 60 busy + 7 x 1 bubble = 67.
  EXPECT_EQ(free_choice.schedule.kind, ScheduleKind::dualpipe);
  EXPECT_DOUBLE_EQ(free_choice.simulation.makespan, 66.0);
  EXPECT_EQ(free_choice.reason.rfind("dualpipe:", 0), 0u) << free_choice.reason;
  ASSERT_EQ(free_choice.candidates.size(), 5u);
  for (const AutoCandidate& c : free_choice.candidates) {
    EXPECT_TRUE(c.possible);
    EXPECT_GE(c.makespan, free_choice.simulation.makespan);
  }
  EXPECT_DOUBLE_EQ(free_choice.candidates[4].makespan, 67.0);
  EXPECT_DOUBLE_EQ(free_choice.candidates[4].peak_activations, 8.5);
  // A budget of 8 stage-activations rules out DualPipe (9), DualPipeV (8.5)
  // and GPipe (20): ZB-H1 is next.
  req.memory_budget = 8;
  const AutoChoice tight = choose_schedule(req);
  EXPECT_EQ(tight.schedule.kind, ScheduleKind::zb_h1) << tight.reason;
  req.memory_budget = 2;
  EXPECT_THROW(choose_schedule(req), Error);
}

TEST(PipelineSimulate, TimelineSvgHasOneBoxPerPiece) {
  const Schedule s = zb_h1(3, 4);
  const std::string svg = timeline_svg(s, simulate(s, published_costs()));
  EXPECT_EQ(svg.rfind("<svg", 0), 0u);
  EXPECT_NE(svg.find("rank 2"), std::string::npos);
  std::size_t rects = 0;
  for (std::size_t at = svg.find("<rect"); at != std::string::npos; at = svg.find("<rect", at + 1))
    ++rects;
  std::size_t ops = 0;
  for (const auto& r : s.ops) ops += r.size();
  EXPECT_EQ(rects, 1 + ops + 7);  // background, one per op (no FB here), legend
}

}  // namespace
}  // namespace epx::pipeline
