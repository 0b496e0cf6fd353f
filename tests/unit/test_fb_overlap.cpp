// The FB overlap's two pieces on their own: the compute turn (one thread
// computes at a time; comm of one counted as hidden while the other
// computes) and the worker that runs a unit's backward half.
#include <atomic>
#include <chrono>
#include <stdexcept>
#include <thread>

#include <gtest/gtest.h>

#include "model/compute_turn.hpp"
#include "train/fb_worker.hpp"

namespace epx {
namespace {

using namespace std::chrono_literals;

// Work that notes how many threads compute at once.
void compute(std::atomic<int>& now, std::atomic<int>& most) {
  const int n = ++now;
  int m = most.load();
  while (n > m && !most.compare_exchange_weak(m, n)) {
  }
  std::this_thread::sleep_for(2ms);
  --now;
}

TEST(ComputeTurn, OneThreadComputesAtATimeAndCommIsHiddenBehindTheOther) {
  model::ComputeTurn turn;
  std::atomic<int> now{0}, most{0};
  const auto half = [&] {
    model::ComputingScope computing(&turn);
    for (int piece = 0; piece < 4; ++piece) {
      compute(now, most);
      model::CommScope comm(&turn);  // a dispatch or combine: the other half computes
      std::this_thread::sleep_for(3ms);
    }
    compute(now, most);
  };
  std::thread other(half);
  half();
  other.join();
  EXPECT_EQ(most.load(), 1) << "both halves computed at once";
  // 10 compute pieces of 2 ms each, held one at a time.
  EXPECT_GE(turn.computing_ms(), 20.0);
  // Some of one half's comm ran while the other computed, never more than
  // the compute itself.
  EXPECT_GT(turn.hidden_ms(), 0.0);
  EXPECT_LE(turn.hidden_ms(), turn.computing_ms());
}

TEST(ComputeTurn, NoCommMeansNothingHidden) {
  model::ComputeTurn turn;
  {
    model::ComputingScope computing(&turn);
    std::this_thread::sleep_for(2ms);
  }
  EXPECT_GE(turn.computing_ms(), 2.0);
  EXPECT_EQ(turn.hidden_ms(), 0.0);
}

TEST(FbWorker, RunsJobsInTurnAndRethrowsTheirErrors) {
  train::FbWorker worker;
  int value = 0;
  const std::thread::id me = std::this_thread::get_id();
  std::thread::id ran_on;
  worker.run([&] {
    value = 1;
    ran_on = std::this_thread::get_id();
  });
  worker.wait();
  EXPECT_EQ(value, 1);
  EXPECT_NE(ran_on, me);
  worker.run([] { throw std::runtime_error("the backward half failed"); });
  EXPECT_THROW(
      {
        try {
          worker.wait();
        } catch (const std::runtime_error& e) {
          EXPECT_STREQ(e.what(), "the backward half failed");
          throw;
        }
      },
      std::runtime_error);
  worker.run([&] { value = 2; });  // still usable after an error
  worker.wait();
  EXPECT_EQ(value, 2);
}

}  // namespace
}  // namespace epx
