// The measured op costs that epx-train hands the simulator: per (rank, local
// chunk) means, a kind a cell never ran taking the mean over all ranks.
#include <gtest/gtest.h>

#include <epx/pipeline_tools.hpp>

#include "train/pipeline_timeline.hpp"

namespace epx {
namespace {

using pipeline::OpKind;
using train::OpTotals;

TEST(CellCosts, MeansPerCellAndFallbacksToTheWorldMean) {
  // Rank 0 chunk 0 ran F 2 and 4, B 6; rank 0 chunk 1 ran only F 3;
  // rank 1 chunk 0 split its backward (Bi 5, W 1), chunk 1 an FB unit of 9.
  std::vector<std::vector<OpTotals>> cells(2, std::vector<OpTotals>(2));
  cells[0][0].add(OpKind::F, 2, 0, 2, 0);
  cells[0][0].add(OpKind::F, 4, 0, 4, 0);
  cells[0][0].add(OpKind::B, 6, 0, 6, 0);
  cells[0][1].add(OpKind::F, 3, 0, 3, 0);
  cells[1][0].add(OpKind::Bi, 5, 0, 5, 0);
  cells[1][0].add(OpKind::W, 1, 0, 1, 0);
  cells[1][1].add(OpKind::FB, 9, 0, 9, 0);
  OpTotals all;
  for (const auto& rank : cells)
    for (const OpTotals& c : rank) all.add(c);

  const auto costs = train::cell_costs(cells, all);
  ASSERT_EQ(costs.size(), 2u);
  ASSERT_EQ(costs[0].size(), 2u);
  EXPECT_DOUBLE_EQ(costs[0][0].f, 3);
  EXPECT_DOUBLE_EQ(costs[0][0].b, 6);
  EXPECT_DOUBLE_EQ(costs[0][0].w, 1);   // the world's W
  EXPECT_DOUBLE_EQ(costs[0][0].fb, 9);  // the world's FB
  EXPECT_DOUBLE_EQ(costs[0][1].f, 3);
  EXPECT_DOUBLE_EQ(costs[0][1].b, 6);  // the world's B
  EXPECT_DOUBLE_EQ(costs[1][0].f, 3);  // the world's F: (2 + 4 + 3) / 3
  EXPECT_DOUBLE_EQ(costs[1][0].b, 6);  // Bi + W
  EXPECT_DOUBLE_EQ(costs[1][0].w, 1);
  EXPECT_DOUBLE_EQ(costs[1][1].fb, 9);
  EXPECT_DOUBLE_EQ(all.costs().f, 3);
}

TEST(CellCosts, EqualCellsSimulateLikeOneCost) {
  // Every cell ran the same ops: the per-cell table and the one-cost form
  // give the same makespan on every schedule.
  for (auto kind : {pipeline::ScheduleKind::one_f_one_b, pipeline::ScheduleKind::zb_h1,
                    pipeline::ScheduleKind::dualpipe, pipeline::ScheduleKind::dualpipe_v}) {
    const pipeline::Schedule s = pipeline::make_schedule(kind, {4, 8});
    std::vector<std::vector<OpTotals>> cells;
    OpTotals all;
    for (const std::vector<int>& chunks : s.stage_of) {
      cells.emplace_back(chunks.size());
      for (OpTotals& c : cells.back()) {
        c.add(OpKind::F, 1.5, 0, 1.5, 0);
        c.add(OpKind::B, 2.5, 0, 2.5, 0);
        c.add(OpKind::Bi, 1.75, 0, 1.75, 0);
        c.add(OpKind::W, 0.75, 0, 0.75, 0);
        c.add(OpKind::FB, 3.25, 0, 3.25, 0);
        all.add(c);
      }
    }
    const double one = pipeline::simulate(s, all.costs()).makespan;
    EXPECT_DOUBLE_EQ(pipeline::simulate(s, train::cell_costs(cells, all)).makespan, one)
        << pipeline::to_string(kind);
  }
}

TEST(CellCosts, ASlowRankLengthensTheSimulatedStep) {
  const pipeline::Schedule s = pipeline::make_schedule(pipeline::ScheduleKind::dualpipe, {4, 8});
  std::vector<std::vector<OpTotals>> cells;
  OpTotals all;
  for (std::size_t r = 0; r < s.stage_of.size(); ++r) {
    cells.emplace_back(s.stage_of[r].size());
    const double slow = r == 0 ? 1.5 : 1.0;  // rank 0 runs both its chunks slower
    for (OpTotals& c : cells.back()) {
      c.add(OpKind::F, 1 * slow, 0, 1 * slow, 0);
      c.add(OpKind::B, 2 * slow, 0, 2 * slow, 0);
      c.add(OpKind::FB, 3 * slow, 0, 3 * slow, 0);
      all.add(c);
    }
  }
  EXPECT_GT(pipeline::simulate(s, train::cell_costs(cells, all)).makespan,
            pipeline::simulate(s, all.costs()).makespan);
}

}  // namespace
}  // namespace epx

namespace epx {
namespace {

TEST(PipelineTimeline, ReplaysTheOpTimesAndFitsTheHandOffLatency) {
  // A "measured" step that is a simulation with 0.3 ms per hand-off: the
  // replay of its op times without latency is the simulation without it, and
  // the fitted latency is the 0.3 it was made with.
  for (auto kind : {pipeline::ScheduleKind::one_f_one_b, pipeline::ScheduleKind::dualpipe}) {
    const pipeline::Schedule s = pipeline::make_schedule(kind, {4, 8});
    pipeline::Costs c{};
    c.f = 1.25, c.b = 2.5, c.w = 0, c.fb = 3.0;
    pipeline::Costs slow = c;
    slow.p2p = 0.3;
    const pipeline::Simulation step = pipeline::simulate(s, slow);
    std::vector<std::vector<pipeline::OpTime>> times = step.times;
    for (auto& rank : times)
      for (pipeline::OpTime& t : rank) t.start += 100, t.end += 100;  // any clock
    const train::TimelineReport rep = train::pipeline_timeline(s, times);
    EXPECT_NEAR(rep.measured_ms, step.makespan, 1e-9) << pipeline::to_string(kind);
    EXPECT_NEAR(rep.replayed_ms, pipeline::simulate(s, c).makespan, 1e-9);
    EXPECT_LT(rep.replayed_ms, rep.measured_ms);
    EXPECT_NEAR(rep.handoff_ms, 0.3, 1e-6);
    EXPECT_NE(rep.svg.find("ms per hand-off"), std::string::npos);
    // Measured, not fitted: every op that waited for another rank's output
    // started 0.3 after it; every other op right after its rank's previous.
    const train::StepReplay again = train::replay_step(s, times);
    EXPECT_GT(again.waits, 0);
    EXPECT_NEAR(again.waited_ms, 0.3, 1e-9);
    EXPECT_NEAR(again.ready_gap_ms, 0, 1e-9);
    EXPECT_NEAR(again.span_ms, step.makespan, 1e-9);
  }
}

}  // namespace
}  // namespace epx

namespace epx {
namespace {

TEST(CellCosts, AWeightGradientLongerThanTheFullBackwardIsCappedAtIt) {
  // Full backwards of 2 ms, a weight-gradient op of 3 ms (a noisy host):
  // the simulator takes w <= b, so w is capped at b rather than refused.
  std::vector<std::vector<OpTotals>> cells(1, std::vector<OpTotals>(1));
  cells[0][0].add(OpKind::F, 1, 0, 1, 0);
  cells[0][0].add(OpKind::B, 2, 0, 2, 0);
  cells[0][0].add(OpKind::W, 3, 0, 3, 0);
  const auto costs = train::cell_costs(cells, cells[0][0]);
  EXPECT_DOUBLE_EQ(costs[0][0].b, 2);
  EXPECT_DOUBLE_EQ(costs[0][0].w, 2);
  EXPECT_DOUBLE_EQ(cells[0][0].costs().w, 2);
}

}  // namespace
}  // namespace epx
