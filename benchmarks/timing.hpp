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

// The copy ceiling: every rank at once memcpy's `bytes` (what it receives in
// a dispatch) into a separate, already touched buffer. Median seconds, as above.
double time_copy(MPI_Comm comm, const Repeat& repeat, std::size_t bytes);

double median(std::vector<double> values);

}  // namespace epx::bench
