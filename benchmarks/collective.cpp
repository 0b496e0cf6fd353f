#include "benchmarks/collective.hpp"

#include <cstdio>
#include <string>

namespace epx::bench {

namespace {

// One write per line: ranks share stderr, and piecewise writes interleave.
void write_line(std::string line) {
  line += '\n';
  std::fwrite(line.data(), 1, line.size(), stderr);
  std::fflush(stderr);
}

}  // namespace

int comm_rank(MPI_Comm comm) {
  int r = 0;
  MPI_Comm_rank(comm, &r);
  return r;
}

int comm_size(MPI_Comm comm) {
  int n = 0;
  MPI_Comm_size(comm, &n);
  return n;
}

double mean_over_ranks(MPI_Comm comm, double value) {
  double sum = 0;
  MPI_Allreduce(&value, &sum, 1, MPI_DOUBLE, MPI_SUM, comm);
  return sum / comm_size(comm);
}

void agree_on_check(MPI_Comm comm, const std::string& local_error, const std::string& what) {
  int failed = local_error.empty() ? 0 : 1;
  if (failed) write_line("epx-bench: rank " + std::to_string(comm_rank(comm)) + ": " + local_error);
  int any = 0;
  MPI_Allreduce(&failed, &any, 1, MPI_INT, MPI_MAX, comm);
  if (any) throw CheckFailed(what);
}

void abort_all(MPI_Comm comm, const std::string& message) {
  write_line("epx-bench: rank " + std::to_string(comm_rank(comm)) + ": error: " + message);
  MPI_Abort(comm, 1);
  std::_Exit(1);  // MPI_Abort does not return; this keeps [[noreturn]] honest
}

void progress(MPI_Comm comm, const std::string& line) {
  if (comm_rank(comm) == 0) write_line("epx-bench: " + line);
}

}  // namespace epx::bench
