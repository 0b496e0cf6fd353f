// Collective timing: every rank runs the operation together, an iteration
// lasts as long as its slowest rank, and the median iteration is reported.
#pragma once

#include <mpi.h>

#include <cstddef>
#include <functional>
#include <vector>

namespace epx::bench {

struct Repeat {
  int warmup = 3;  // untimed iterations first
  int iters = 10;  // timed iterations
};

// Per iteration: prepare() (untimed; e.g. drop the last result), MPI_Barrier,
// then op() timed with steady_clock; the iteration's time is the max over
// ranks (MPI_Allreduce). Returns the median over the timed iterations, seconds.
double time_collective(MPI_Comm comm, const Repeat& repeat, const std::function<void()>& prepare,
                       const std::function<void()>& op);

// One timed operation of a set measured together.
struct TimedOp {
  std::function<void()> prepare;  // untimed, before each run
  std::function<void()> op;
};

// Times several operations in the same iterations, each as time_collective
// does, rotating their order from one iteration to the next, so that every
// one sees the same machine (on a shared or oversubscribed host the load
// drifts; ratios measured this way are stable, back-to-back blocks are not).
// Returns each operation's median, seconds.
std::vector<double> time_interleaved(MPI_Comm comm, const Repeat& repeat,
                                     const std::vector<TimedOp>& ops);

// A memcpy of `bytes` into a separate, already touched buffer: the copy
// ceiling, when every rank runs it at once.
class CopyCeiling {
 public:
  explicit CopyCeiling(std::size_t bytes);
  void run();

 private:
  std::size_t bytes_;
  std::vector<unsigned char> src_, dst_;
};

double median(std::vector<double> values);

}  // namespace epx::bench
