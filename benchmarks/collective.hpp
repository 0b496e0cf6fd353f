// Small MPI helpers shared by the benchmarks: rank/size, agreeing on a check
// across ranks, and stopping every rank when one of them cannot go on.
#pragma once

#include <mpi.h>

#include <stdexcept>
#include <string>

namespace epx::bench {

int comm_rank(MPI_Comm comm);
int comm_size(MPI_Comm comm);

// Collective: the mean of `value` over the ranks.
double mean_over_ranks(MPI_Comm comm, double value);

// Thrown on every rank once the ranks agree that a result check failed; the
// failing ranks have printed why. main() exits 1 after MPI_Finalize.
class CheckFailed : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Collective. `local_error` is "" when this rank's check passed. A rank whose
// check failed prints "epx-bench: rank r: <local_error>"; then, if any rank
// failed, every rank throws CheckFailed(what).
void agree_on_check(MPI_Comm comm, const std::string& local_error, const std::string& what);

// Prints "epx-bench: rank r: error: <message>" and ends every rank with exit
// status 1 (MPI_Abort). For errors after which ranks may no longer meet in
// collectives: unwinding would run collective destructors and could hang.
[[noreturn]] void abort_all(MPI_Comm comm, const std::string& message);

// Rank 0 prints `line` to stderr (progress of a long run).
void progress(MPI_Comm comm, const std::string& line);

}  // namespace epx::bench
