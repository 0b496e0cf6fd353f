// Collective timing: every rank runs the operation together, an iteration
// lasts as long as its slowest rank, and the median iteration is reported.
#pragma once

#include <mpi.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

namespace epx::bench {

struct Repeat {
  int warmup = 3;  // untimed iterations first
  int iters = 10;  // timed iterations
};

// One timed operation of a set measured together.
struct TimedOp {
  std::function<void()> prepare;  // untimed, before each run
  std::function<void()> op;
};

// Times several operations in the same iterations, rotating their order from
// one iteration to the next. Each run: prepare() (untimed; e.g. drop the last
// result), MPI_Barrier, then op() timed with steady_clock; a run lasts as long
// as its slowest rank (MPI_Allreduce MAX). Rotating means that every
// one sees the same machine (on a shared or oversubscribed host the load
// drifts; ratios measured this way are stable, back-to-back blocks are not).
// Returns each operation's median, seconds.
std::vector<double> time_interleaved(MPI_Comm comm, const Repeat& repeat,
                                     const std::vector<TimedOp>& ops);

// Calls that must run in this order, each timed on its own (its prepare()
// untimed, then barrier, op, max over ranks): e.g. a dispatch, then the
// combine of its result.
using TimedSequence = std::vector<TimedOp>;

// The general form of time_interleaved: whole sequences rotate from one
// iteration to the next, their steps keep their order. Returns every timed
// iteration's slowest-rank time, seconds: samples[sequence][step][iteration].
std::vector<std::vector<std::vector<double>>> time_interleaved_samples(
    MPI_Comm comm, const Repeat& repeat, const std::vector<TimedSequence>& sequences);

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

// Spins the CPU (dependent floating-point work, not a sleep) for about
// `microseconds`, calibrated on this rank when constructed: the stand-in for
// the compute a caller overlaps with communication.
class BusyCompute {
 public:
  explicit BusyCompute(double microseconds);
  void run();
  double target_us() const { return target_us_; }

 private:
  double spin(std::uint64_t rounds);
  double target_us_ = 0;
  std::uint64_t rounds_ = 0;
};

double median(std::vector<double> values);
// The p-th percentile (0..100) by the nearest-rank method.
double percentile(std::vector<double> values, double p);

// CPU time of the calling thread, ms: unlike wall time, not inflated while
// other processes hold the core (the CI machine's 2 cores are shared).
double thread_cpu_ms();

}  // namespace epx::bench
