// LoadTracker on every rank count: the window sums the right steps over all
// ranks (checked against the formula that generated the counts), one rank's
// bad input fails every rank at end_step (no hang) and the tracker goes on.
#include <gtest/gtest.h>

#include <epx/epx.hpp>

namespace epx::balancer {
namespace {

// What rank r adds for (step, layer, expert): distinct, non-zero, known.
std::int64_t count(int rank, int step, int layer, int expert) {
  return (rank + 1) * 1000 + (step + 1) * 37 + layer * 7 + expert;
}

Tensor counts(int rank, int step, int layer, int experts, DType dtype) {
  Tensor t = Tensor::empty({experts}, dtype);
  for (int e = 0; e < experts; ++e) {
    if (dtype == DType::i32)
      t.data<std::int32_t>()[e] = static_cast<std::int32_t>(count(rank, step, layer, e));
    else
      t.data<std::int64_t>()[e] = count(rank, step, layer, e);
  }
  return t;
}

TEST(LoadTracker, SlidingWindowSumsOverRanks) {
  const Group group(MPI_COMM_WORLD);
  const int layers = 3, experts = 5, window = 3;
  LoadTracker tracker(group, layers, experts, window, 60);
  for (int step = 0; step < 7; ++step) {
    for (int l = 0; l < layers; ++l) {
      // Layer 1 reports twice per step (two micro-batches), i32 and i64.
      tracker.add(l, counts(group.rank(), step, l, experts, DType::i32));
      if (l == 1) tracker.add(l, counts(group.rank(), step, l, experts, DType::i64));
    }
    tracker.end_step();
    EXPECT_EQ(tracker.steps(), std::min(step + 1, window));
    const Tensor load = tracker.load();
    // No ASSERT: every rank must reach the next step's end_step.
    const bool shaped = load.shape() == std::vector<std::int64_t>{layers, experts};
    EXPECT_TRUE(shaped) << "load is " << load.describe();
    for (int l = 0; shaped && l < layers; ++l) {
      for (int e = 0; e < experts; ++e) {
        std::int64_t expect = 0;
        for (int s = std::max(0, step - window + 1); s <= step; ++s)
          for (int r = 0; r < group.size(); ++r) expect += count(r, s, l, e) * (l == 1 ? 2 : 1);
        EXPECT_EQ(load.data<std::int64_t>()[l * experts + e], expect)
            << "step " << step << " layer " << l << " expert " << e;
      }
    }
  }
}

TEST(LoadTracker, BadInputOnOneRankFailsEveryRank) {
  const Group group(MPI_COMM_WORLD);
  const int experts = 4;
  LoadTracker tracker(group, 2, experts, 2, 60);
  const int bad = group.size() - 1;
  if (group.rank() == bad) {
    EXPECT_THROW(tracker.add(0, Tensor::zeros({experts + 1}, DType::i64)), Error);
  } else {
    tracker.add(0, counts(group.rank(), 0, 0, experts, DType::i64));
  }
  try {
    tracker.end_step();
    ADD_FAILURE() << "end_step succeeded after a bad add on rank " << bad;
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::InvalidArgument);
    const std::string what = e.what();
    if (group.rank() == bad)
      EXPECT_NE(what.find("num_tokens_per_expert is i64[5]"), std::string::npos) << what;
    else
      EXPECT_NE(what.find("rank " + std::to_string(bad) + " failed"), std::string::npos) << what;
  }
  EXPECT_EQ(tracker.steps(), 0);
  // The failed step was dropped everywhere; the next one counts normally.
  tracker.add(1, counts(group.rank(), 1, 1, experts, DType::i64));
  tracker.end_step();
  EXPECT_EQ(tracker.steps(), 1);
  std::int64_t expect = 0;
  for (int r = 0; r < group.size(); ++r) expect += count(r, 1, 1, 0);
  EXPECT_EQ(tracker.load().data<std::int64_t>()[experts], expect);
  EXPECT_EQ(tracker.load().data<std::int64_t>()[0], 0);
}

TEST(LoadTracker, LocalArgumentChecks) {
  const Group group(MPI_COMM_WORLD);
  EXPECT_THROW(LoadTracker(group, 0, 4, 1), Error);
  EXPECT_THROW(LoadTracker(group, 1, 4, 0), Error);
  LoadTracker tracker(group, 1, 4, 1, 60);
  Tensor neg = Tensor::zeros({4}, DType::i32);
  neg.data<std::int32_t>()[2] = -1;
  EXPECT_THROW(tracker.add(0, neg), Error);
  EXPECT_THROW(tracker.add(1, Tensor::zeros({4}, DType::i32)), Error);
  EXPECT_THROW(tracker.end_step(), Error);  // every rank made the same bad calls
  tracker.end_step();
  EXPECT_EQ(tracker.steps(), 1);
}

}  // namespace
}  // namespace epx::balancer
