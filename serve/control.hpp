// The serving engine's own messages between ranks (apart from comm's): the
// step plan from rank 0 to all, and every rank's logits back to rank 0.
// Non-blocking MPI collectives polled against a deadline, so a rank that is
// gone makes the others fail within the timeout, naming the phase.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <mpi.h>

namespace epx::serve {

class Control {
 public:
  // Collective over `comm` (duplicated).
  Control(MPI_Comm comm, double timeout_s);
  ~Control();
  Control(const Control&) = delete;
  Control& operator=(const Control&) = delete;

  int rank() const noexcept { return rank_; }
  int size() const noexcept { return size_; }
  double timeout_s() const noexcept { return timeout_s_; }

  // Rank 0's `message` to every rank (resized on the others). patient: the
  // message may be a heartbeat away (poll slowly, sparing the cores).
  void broadcast(std::vector<std::int64_t>& message, const char* what, bool patient);
  // Every rank's `mine` (counts[r] floats from rank r), concatenated by rank,
  // on rank 0: point to point, so that a timeout names the ranks that did
  // not send.
  std::vector<float> gather(const std::vector<float>& mine, const std::vector<int>& counts,
                            const char* what);
  // Throws on every rank if any rank's own_error is not empty.
  void agree(const std::string& own_error, const char* what);

 private:
  void wait(MPI_Request& request, const char* what, bool patient);
  // Waits for requests[i] from rank peers[i], all of them, against one deadline.
  void wait_all(std::vector<MPI_Request>& requests, const std::vector<int>& peers,
                const char* what);
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1;
  double timeout_s_;
};

}  // namespace epx::serve
