#include "serve/control.hpp"

#include <time.h>

#include "core/agree.hpp"
#include "core/check.hpp"
#include "core/wait.hpp"

namespace epx::serve {

Control::Control(MPI_Comm comm, double timeout_s) : timeout_s_(timeout_s) {
  MPI_Comm_dup(comm, &comm_);
  MPI_Comm_rank(comm_, &rank_);
  MPI_Comm_size(comm_, &size_);
}

Control::~Control() {
  if (comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
}

// Polls with back-off up to 1 ms between rounds: ranks other than 0 spend
// idle time here (rank 0 sends a plan at least every heartbeat), so the
// wait must leave the cores to the ranks that work.
void Control::wait(MPI_Request& request, const char* what) {
  const core::Deadline deadline(timeout_s_);
  int done = 0;
  for (int round = 0;; ++round) {
    MPI_Test(&request, &done, MPI_STATUS_IGNORE);
    if (done) return;
    EPX_CHECK(!deadline.expired(), Timeout, "serve: ", what, ": no answer from ",
              rank_ == 0 ? "the other ranks" : "rank 0", " after ", timeout_s_, " s");
    if (round < 64) {
      sched_yield();
    } else {
      const long us = round < 1000 ? 50 : 1000;
      timespec ts{0, us * 1000};
      nanosleep(&ts, nullptr);
    }
  }
}

void Control::broadcast(std::vector<std::int64_t>& message, const char* what) {
  std::int64_t n = static_cast<std::int64_t>(message.size());
  MPI_Request r;
  MPI_Ibcast(&n, 1, MPI_INT64_T, 0, comm_, &r);
  wait(r, what);
  message.resize(static_cast<std::size_t>(n));
  MPI_Ibcast(message.data(), static_cast<int>(n), MPI_INT64_T, 0, comm_, &r);
  wait(r, what);
}

std::vector<float> Control::gather(const std::vector<float>& mine, const std::vector<int>& counts,
                                   const char* what) {
  EPX_CHECK_EQ(static_cast<int>(mine.size()), counts[static_cast<std::size_t>(rank_)], Internal,
               "serve: ", what);
  std::vector<int> displs(counts.size(), 0);
  for (std::size_t r = 1; r < counts.size(); ++r) displs[r] = displs[r - 1] + counts[r - 1];
  std::vector<float> all(rank_ == 0 ? static_cast<std::size_t>(displs.back() + counts.back()) : 0);
  MPI_Request r;
  MPI_Igatherv(mine.data(), static_cast<int>(mine.size()), MPI_FLOAT, all.data(), counts.data(),
               displs.data(), MPI_FLOAT, 0, comm_, &r);
  wait(r, what);
  return all;
}

void Control::agree(const std::string& own_error, const char* what) {
  core::agree_on_error(comm_, own_error, ErrorCode::InvalidArgument, core::Deadline(timeout_s_),
                       what);
}

}  // namespace epx::serve
