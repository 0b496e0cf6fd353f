#include "serve/control.hpp"

#include <time.h>

#include <algorithm>
#include <chrono>
#include <string>

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

// Polls with back-off: yields for the first rounds, then 50 us sleeps (1 ms
// past 50 ms), so that a busy server's step messages are seen within tens
// of microseconds. A `patient` wait (for the plan after an idle one: rank 0
// then waits up to a heartbeat for work) sleeps 5 ms at a time instead: with
// 50 us sleeps an idle rank took 14 % of a core, with 5 ms 1.5 %.
void Control::wait(MPI_Request& request, const char* what, bool patient) {
  const core::Deadline deadline(timeout_s_);
  const auto start = std::chrono::steady_clock::now();
  int done = 0;
  for (int round = 0;; ++round) {
    MPI_Test(&request, &done, MPI_STATUS_IGNORE);
    if (done) return;
    EPX_CHECK(!deadline.expired(), Timeout, "serve: ", what, ": no answer from ",
              rank_ == 0 ? "the other ranks" : "rank 0", " after ", timeout_s_, " s");
    if (round < 64 && !patient) {
      sched_yield();
      continue;
    }
    const double waited =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const long us = patient ? 5000 : waited < 0.05 ? 50 : 1000;
    timespec ts{0, us * 1000};
    nanosleep(&ts, nullptr);
  }
}

void Control::broadcast(std::vector<std::int64_t>& message, const char* what, bool patient) {
  std::int64_t n = static_cast<std::int64_t>(message.size());
  MPI_Request r;
  MPI_Ibcast(&n, 1, MPI_INT64_T, 0, comm_, &r);
  wait(r, what, patient);
  message.resize(static_cast<std::size_t>(n));
  MPI_Ibcast(message.data(), static_cast<int>(n), MPI_INT64_T, 0, comm_, &r);
  wait(r, what, false);
}

void Control::wait_all(std::vector<MPI_Request>& requests, const std::vector<int>& peers,
                       const char* what) {
  const core::Deadline deadline(timeout_s_);
  const auto start = std::chrono::steady_clock::now();
  for (int round = 0;; ++round) {
    std::string missing;
    for (std::size_t i = 0; i < requests.size(); ++i) {
      int done = 0;
      if (requests[i] != MPI_REQUEST_NULL) MPI_Test(&requests[i], &done, MPI_STATUS_IGNORE);
      if (requests[i] != MPI_REQUEST_NULL)
        missing += (missing.empty() ? "rank " : ", ") + std::to_string(peers[i]);
    }
    if (missing.empty()) return;
    EPX_CHECK(!deadline.expired(), Timeout, "serve: ", what, ": no answer from ", missing,
              " after ", timeout_s_, " s");
    if (round < 64) {
      sched_yield();
      continue;
    }
    const double waited =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    timespec ts{0, (waited < 0.05 ? 50 : 1000) * 1000L};
    nanosleep(&ts, nullptr);
  }
}

std::vector<float> Control::gather(const std::vector<float>& mine, const std::vector<int>& counts,
                                   const char* what) {
  EPX_CHECK_EQ(static_cast<int>(mine.size()), counts[static_cast<std::size_t>(rank_)], Internal,
               "serve: ", what);
  constexpr int kTag = 17;
  if (rank_ != 0) {
    MPI_Request r;
    MPI_Isend(mine.data(), static_cast<int>(mine.size()), MPI_FLOAT, 0, kTag, comm_, &r);
    wait(r, what, false);
    return {};
  }
  std::vector<int> displs(counts.size(), 0);
  for (std::size_t r = 1; r < counts.size(); ++r) displs[r] = displs[r - 1] + counts[r - 1];
  std::vector<float> all(static_cast<std::size_t>(displs.back() + counts.back()));
  std::copy(mine.begin(), mine.end(), all.begin());
  std::vector<MPI_Request> requests;
  std::vector<int> peers;
  for (int q = 1; q < size_; ++q) {
    requests.emplace_back();
    peers.push_back(q);
    MPI_Irecv(all.data() + displs[q], counts[q], MPI_FLOAT, q, kTag, comm_, &requests.back());
  }
  wait_all(requests, peers, what);
  return all;
}

void Control::agree(const std::string& own_error, const char* what) {
  core::agree_on_error(comm_, own_error, ErrorCode::InvalidArgument, core::Deadline(timeout_s_),
                       what);
}

}  // namespace epx::serve
