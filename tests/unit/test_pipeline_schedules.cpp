// The schedule generators and validate(): every generator on many shapes
// gives a schedule that validates; the published programs have their
// published shape; impossible requests and broken schedules give clear errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <epx/error.hpp>
#include <epx/pipeline_tools.hpp>
#include <string>
#include <utility>

namespace epx::pipeline {
namespace {

// Runs `f`, expects an InvalidArgument error whose message contains `text`.
template <class Fn>
void expect_invalid(Fn&& f, const std::string& text) {
  try {
    f();
    ADD_FAILURE() << "no error; expected one saying '" << text << "'";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::InvalidArgument) << e.what();
    EXPECT_NE(std::string(e.what()).find(text), std::string::npos) << e.what();
  }
}

std::size_t count(const std::vector<Op>& ops, OpKind kind) {
  return std::count_if(ops.begin(), ops.end(), [kind](const Op& op) { return op.kind == kind; });
}

// Every rank computes, per chunk it holds, one forward and one backward of
// every micro-batch whose path passes there.
void expect_complete(const Schedule& s) {
  std::size_t forwards = 0, backwards = 0;
  for (const std::vector<Op>& ops : s.ops) {
    forwards += count(ops, OpKind::F) + count(ops, OpKind::FB);
    backwards += count(ops, OpKind::B) + count(ops, OpKind::Bi) + count(ops, OpKind::FB);
    EXPECT_EQ(count(ops, OpKind::Bi), count(ops, OpKind::W));
  }
  const std::size_t pieces = static_cast<std::size_t>(s.microbatches) * s.stages;
  EXPECT_EQ(forwards, pieces);
  EXPECT_EQ(backwards, pieces);
}

TEST(PipelineSchedules, LinearSchedulesValidateOnManyShapes) {
  for (int ranks = 1; ranks <= 9; ++ranks) {
    for (int m : {1, 2, 3, ranks, ranks + 1, 2 * ranks + 1, 17}) {
      for (ScheduleKind kind :
           {ScheduleKind::gpipe, ScheduleKind::one_f_one_b, ScheduleKind::zb_h1}) {
        SCOPED_TRACE(testing::Message() << to_string(kind) << " ranks " << ranks << " m " << m);
        const Schedule s = make_schedule(kind, {ranks, m});
        EXPECT_EQ(s.kind, kind);
        EXPECT_EQ(s.stages, ranks);
        EXPECT_NO_THROW(validate(s));
        expect_complete(s);
      }
    }
  }
}

TEST(PipelineSchedules, DualPipeValidatesOnEveryEvenShape) {
  for (int ranks = 2; ranks <= 12; ranks += 2) {
    for (int m = 2 * ranks; m <= 2 * ranks + 12; m += 2) {
      SCOPED_TRACE(testing::Message() << "dualpipe ranks " << ranks << " m " << m);
      const Schedule s = dualpipe(ranks, m);
      EXPECT_NO_THROW(validate(s));
      expect_complete(s);
      for (int r = 0; r < ranks; ++r) {
        EXPECT_EQ(s.stage_of[r], (std::vector<int>{r, ranks - 1 - r}));
      }
      EXPECT_EQ(s.path_of[m / 2 - 1], 0);
      EXPECT_EQ(s.path_of[m / 2], 1);
    }
  }
}

TEST(PipelineSchedules, DualPipeVValidatesOnEveryShape) {
  for (int ranks = 1; ranks <= 9; ++ranks) {
    for (int m = 2 * ranks; m <= 2 * ranks + 7; ++m) {
      SCOPED_TRACE(testing::Message() << "dualpipev ranks " << ranks << " m " << m);
      const Schedule s = dualpipe_v(ranks, m);
      EXPECT_NO_THROW(validate(s));
      expect_complete(s);
      EXPECT_EQ(s.stages, 2 * ranks);
      for (int r = 0; r < ranks; ++r) {
        EXPECT_EQ(s.stage_of[r], (std::vector<int>{r, 2 * ranks - 1 - r}));
      }
    }
  }
}

TEST(PipelineSchedules, DualPipeFollowsThePublishedSteps) {
  const Schedule s = dualpipe(8, 20);  // half-ranks n = 4, 10 micro-batches a side
  // Rank 0: step 1 = 2(n-1) = 6 forwards of its early chunk, then step 2's F0 F1.
  std::vector<Op> head(s.ops[0].begin(), s.ops[0].begin() + 8);
  std::vector<Op> want;
  for (int m = 0; m < 7; ++m) want.push_back(Op::forward(m, 0));
  want.push_back(Op::forward(10, 1));
  EXPECT_EQ(head, want);
  // Rank 7 mirrors it: its early chunk is chunk 1, fed micro-batches 10..19.
  EXPECT_EQ(s.ops[7][0], Op::forward(10, 1));
  EXPECT_EQ(s.ops[7][7], Op::forward(0, 0));
  // Steps 4-5 overlap: 2(c - 2n + h + 1) + (n - h - 1) FB units, one fewer on
  // the middle ranks, whose first step-4 pair runs unoverlapped.
  EXPECT_EQ(count(s.ops[0], OpKind::FB), 2u * 3 + 3);
  EXPECT_EQ(count(s.ops[3], OpKind::FB), 2u * 6 - 1);
  EXPECT_EQ(count(s.ops[4], OpKind::FB), 2u * 6 - 1);
  // The middle rank starts both chunks at once: no step 1.
  EXPECT_EQ(s.ops[3][0], Op::forward(0, 0));
  EXPECT_EQ(s.ops[3][1], Op::forward(10, 1));
  // Every rank ends on its deferred weight grads (step 8: h + 1 of them).
  EXPECT_EQ(s.ops[0].back().kind, OpKind::W);
  EXPECT_EQ(s.ops[3].end()[-4].kind, OpKind::W);
}

TEST(PipelineSchedules, ZbH1DefersRankIndexWeightGrads) {
  const Schedule s = zb_h1(4, 8);
  EXPECT_EQ(count(s.ops[0], OpKind::W), 0u);  // rank 0 runs full backwards
  EXPECT_EQ(count(s.ops[0], OpKind::B), 8u);
  for (int r = 1; r < 4; ++r) {
    // The last r ops are the deferred W's, oldest first.
    const std::vector<Op>& ops = s.ops[r];
    for (int k = 0; k < r; ++k) EXPECT_EQ(ops[ops.size() - r + k], Op::weight_grad(8 - r + k, 0));
  }
}

TEST(PipelineSchedules, ImpossibleRequestsSayWhy) {
  expect_invalid([] { dualpipe(7, 20); }, "dualpipe needs an even number of ranks, got 7");
  expect_invalid([] { dualpipe(4, 6); }, "at least 2 x ranks = 8 micro-batches, got 6");
  expect_invalid([] { dualpipe(4, 9); }, "even number of micro-batches");
  expect_invalid([] { dualpipe_v(3, 5); }, "dualpipev needs at least 2 x ranks = 6");
  expect_invalid([] { dualpipe_v(0, 5); }, "at least one rank, got 0");
  expect_invalid([] { gpipe(0, 4); }, "gpipe needs at least one rank, got 0");
  expect_invalid([] { one_f_one_b(4, 0); }, "1f1b needs at least one micro-batch, got 0");
  expect_invalid([] { zb_h1(-1, 4); }, "zb-h1 needs at least one rank");
  expect_invalid([] { parse_schedule_kind("zb-h2"); }, "unknown schedule 'zb-h2'");
  EXPECT_EQ(parse_schedule_kind("dualpipev"), ScheduleKind::dualpipe_v);
  EXPECT_EQ(parse_schedule_kind(to_string(ScheduleKind::one_f_one_b)), ScheduleKind::one_f_one_b);
}

TEST(PipelineValidate, FindsADeadlock) {
  // 1F1B on 2 ranks and 2 micro-batches:
  //   rank 0: F0 F1 B0 B1    rank 1: F0 B0 F1 B1
  Schedule s = one_f_one_b(2, 2);
  ASSERT_EQ(s.ops[0], (std::vector<Op>{Op::forward(0, 0), Op::forward(1, 0), Op::backward(0, 0),
                                       Op::backward(1, 0)}));
  // Rank 0 now waits for B0 before sending F1; rank 1 waits for F1 before B0.
  std::swap(s.ops[0][1], s.ops[0][2]);
  std::swap(s.ops[1][1], s.ops[1][2]);
  expect_invalid([&] { validate(s); },
                 "deadlock with blocking receives: rank 0 op 1 B(0,0) waits for B of "
                 "micro-batch 0 stage 1 on rank 1; rank 1 op 1 F(1,0) waits for F of "
                 "micro-batch 1 stage 0 on rank 0");
  EXPECT_THROW(simulate(s, Costs{}), Error);
}

TEST(PipelineValidate, FindsADeadlockInsideDualPipe) {
  Schedule s = dualpipe(4, 8);
  // Move rank 1's last op (a deferred W) to the front: it waits for its own Bi.
  std::rotate(s.ops[1].rbegin(), s.ops[1].rbegin() + 1, s.ops[1].rend());
  expect_invalid([&] { validate(s); }, "does not come after its Bi");
  // Each rank starts with the forward that needs the other's first output:
  //   rank 0: F(0,0) F(2,1) ...  ->  F(2,1) F(0,0) ...
  //   rank 1: F(2,1) F(0,0) ...  ->  F(0,0) F(2,1) ...
  s = dualpipe(2, 4);
  ASSERT_EQ(s.ops[0][0], Op::forward(0, 0));
  ASSERT_EQ(s.ops[1][0], Op::forward(2, 1));
  std::swap(s.ops[0][0], s.ops[0][1]);
  std::swap(s.ops[1][0], s.ops[1][1]);
  expect_invalid([&] { validate(s); },
                 "rank 0 op 0 F(2,1) waits for F of micro-batch 2 stage 0 on rank 1; rank 1 op "
                 "0 F(0,0) waits for F of micro-batch 0 stage 0 on rank 0");
}

TEST(PipelineValidate, FindsMissingDuplicateAndMisplacedOps) {
  Schedule s = one_f_one_b(3, 4);
  s.ops[1].erase(std::find(s.ops[1].begin(), s.ops[1].end(), Op::backward(2, 0)));
  expect_invalid([&] { validate(s); },
                 "micro-batch 2 stage 1 (rank 1 chunk 0) needs one backward: a B, or a Bi and "
                 "a W (has B: 0, Bi: 0, W: 0)");

  s = one_f_one_b(3, 4);
  s.ops[2].push_back(Op::forward(1, 0));
  expect_invalid([&] { validate(s); }, "a second F of micro-batch 1 stage 2");

  s = one_f_one_b(3, 4);
  s.ops[0].back() = Op::backward(3, 1);  // rank 0 holds one chunk only
  expect_invalid([&] { validate(s); }, "chunk 1, expected 0 <= chunk < 1");

  s = dualpipe(2, 4);
  // Micro-batch 0 enters at rank 0 on chunk 0; it never visits rank 0's chunk 1.
  s.ops[0][0] = Op::forward(0, 1);
  expect_invalid([&] { validate(s); }, "micro-batch 0 does not pass through rank 0 chunk 1");

  s = one_f_one_b(2, 3);
  // A backward before its own forward on the same rank.
  std::swap(s.ops[1][0], s.ops[1][1]);
  expect_invalid([&] { validate(s); }, "its backward at op 0 does not come after its F at op 1");

  s = dualpipe_v(2, 4);
  for (Op& op : s.ops[0]) {
    if (op.kind == OpKind::FB) {
      op.b_mb = op.mb;
      break;
    }
  }
  expect_invalid([&] { validate(s); }, "an FB unit pairs two different micro-batches");

  s = gpipe(2, 2);
  s.path_of[1] = 3;
  expect_invalid([&] { validate(s); }, "micro-batch 1 takes path 3, expected 0 <= path < 1");
}

}  // namespace
}  // namespace epx::pipeline
