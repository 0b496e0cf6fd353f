// DualPipe and DualPipeV: two chunks per rank and the published 8-step
// program (DeepSeek-V3 report; deepseek-ai/DualPipe), written once in terms of
// a rank's two local "phases" and mapped to chunks and micro-batches per
// schedule.
//
// Phase 0 is the chunk whose stage is early on its path (the rank is `h`
// stages from the entry), phase 1 the chunk whose stage is late. With n
// "half ranks" (DualPipe: P/2, DualPipeV: N) and c micro-batches per phase
// (DualPipe: M/2, DualPipeV: M), rank h runs:
//   1. 2(n-h-1) x F0                       fill the early chunk
//   2. h+1 x (F0 F1)                       both chunks start
//   3. n-h-1 x (Bi1 W F1)                  first backwards, split (zero bubble)
//   4. c-2n+h+1 x (F0&B1, F1&B0)           steady state: overlapped pairs
//   5. n-h-1 x (B1, F1&B0)                 forwards of phase 0 run out
//   6. h+1 x (B1 B0)                       drain; the second half split
//   7. n-h-1 x (W Bi0)                     deferred weight grads fill the wait
//   8. h+1 x W                             the rest of the weight grads
// The ranks at the turn (DualPipe's two middle ranks, DualPipeV's last rank)
// run their first step-4 pair F0, B1 one after the other, as published "to
// further reduce bubble size": the F0 output leaves before the B1 is done.
// W always takes the oldest deferred Bi (a FIFO).
#include <deque>
#include <functional>

#include "core/check.hpp"
#include "pipeline/placement.hpp"

namespace epx::pipeline {

namespace {

struct PhaseMap {
  int chunk[2];                             // local chunk of each phase
  std::function<int(int phase, int k)> mb;  // k-th micro-batch of a phase
};

class DualProgram {
 public:
  DualProgram(std::vector<Op>& out, PhaseMap map) : out_(out), map_(std::move(map)) {}

  void forward(int p) { out_.push_back(Op::forward(next_f(p), map_.chunk[p])); }

  void backward(int p, bool split) {
    const int mb = next_b(p);
    if (!split) {
      out_.push_back(Op::backward(mb, map_.chunk[p]));
      return;
    }
    out_.push_back(Op::input_grad(mb, map_.chunk[p]));
    deferred_.push_back(Op::weight_grad(mb, map_.chunk[p]));
  }

  void weight() {
    EPX_CHECK(!deferred_.empty(), Internal, "dual schedule: W with no deferred Bi");
    out_.push_back(deferred_.front());
    deferred_.pop_front();
  }

  void overlapped(int fp, int bp) {
    const int f_mb = next_f(fp);
    const int b_mb = next_b(bp);
    out_.push_back(Op::overlapped(f_mb, map_.chunk[fp], b_mb, map_.chunk[bp]));
  }

  void run(int n, int h, int c, bool turning_rank) {
    for (int i = 0; i < 2 * (n - h - 1); ++i) forward(0);
    for (int i = 0; i < h + 1; ++i) {
      forward(0);
      forward(1);
    }
    for (int i = 0; i < n - h - 1; ++i) {
      backward(1, true);
      weight();
      forward(1);
    }
    for (int i = 0; i < c - 2 * n + h + 1; ++i) {
      if (i == 0 && turning_rank) {
        forward(0);
        backward(1, false);
      } else {
        overlapped(0, 1);
      }
      overlapped(1, 0);
    }
    for (int i = 0; i < n - h - 1; ++i) {
      backward(1, false);
      overlapped(1, 0);
    }
    // Split the second half of the drain's backwards, so that their weight
    // grads fill the waits of steps 7-8; which of the pair goes first depends
    // on h's parity, as published.
    bool split = false;
    const int drain = h + 1;
    for (int i = 0; i < drain; ++i) {
      if (i == drain / 2 && h % 2 == 1) split = true;
      backward(1, split);
      if (i == drain / 2 && h % 2 == 0) split = true;
      backward(0, split);
    }
    for (int i = 0; i < n - h - 1; ++i) {
      weight();
      backward(0, true);
    }
    while (!deferred_.empty()) weight();
  }

 private:
  int next_f(int p) { return map_.mb(p, f_[p]++); }
  int next_b(int p) { return map_.mb(p, b_[p]++); }

  std::vector<Op>& out_;
  PhaseMap map_;
  int f_[2] = {0, 0};
  int b_[2] = {0, 0};
  std::deque<Op> deferred_;
};

}  // namespace

Schedule dualpipe(int ranks, int microbatches) {
  EPX_CHECK(ranks >= 2 && ranks % 2 == 0, InvalidArgument,
            "dualpipe needs an even number of ranks, got ", ranks);
  EPX_CHECK(microbatches % 2 == 0, InvalidArgument,
            "dualpipe needs an even number of micro-batches (half enter at each end), got ",
            microbatches);
  EPX_CHECK(microbatches >= 2 * ranks, InvalidArgument,
            "dualpipe needs at least 2 x ranks = ", 2 * ranks, " micro-batches, got ",
            microbatches);
  Schedule s = detail::dual_placement(ranks, microbatches);
  const int n = ranks / 2;
  const int half = microbatches / 2;
  for (int r = 0; r < ranks; ++r) {
    // On the second half of the ranks the reverse path is the early one.
    const int second = r >= n ? 1 : 0;
    PhaseMap map{{second, 1 - second},
                 [second, half](int p, int k) { return (p ^ second) * half + k; }};
    const int h = second ? ranks - 1 - r : r;
    DualProgram(s.ops[r], std::move(map)).run(n, h, half, h == n - 1);
  }
  return s;
}

Schedule dualpipe_v(int ranks, int microbatches) {
  EPX_CHECK(ranks >= 1, InvalidArgument, "dualpipev needs at least one rank, got ", ranks);
  EPX_CHECK(microbatches >= 2 * ranks, InvalidArgument,
            "dualpipev needs at least 2 x ranks = ", 2 * ranks, " micro-batches, got ",
            microbatches);
  Schedule s = detail::v_placement(ranks, microbatches);
  for (int r = 0; r < ranks; ++r) {
    PhaseMap map{{0, 1}, [](int, int k) { return k; }};
    DualProgram(s.ops[r], std::move(map)).run(ranks, r, microbatches, r == ranks - 1);
  }
  return s;
}

}  // namespace epx::pipeline
