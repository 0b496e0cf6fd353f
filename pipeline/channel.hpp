// Point-to-point for the executor: receives posted ahead, sends in flight,
// and waits that end at a deadline or when any peer announces a failure.
// Internal to the pipeline module.
#pragma once

#include <mpi.h>

#include <map>
#include <string>
#include <vector>

#include <epx/tensor.hpp>

#include "core/wait.hpp"

namespace epx::pipeline::detail {

class Channel {
 public:
  // Tag 0 carries failure notices; message tags start at 1.
  static constexpr int kAbortTag = 0;

  Channel(MPI_Comm comm, double timeout_s) : comm_(comm), timeout_s_(timeout_s) {}
  ~Channel();  // frees what is left (after a failure) without waiting

  void post_recv(int tag, int from, Tensor buffer);
  // Waits for the receive posted under `tag`; throws Timeout naming `what`
  // and the peer, or PeerFailure when a peer announced a failure.
  Tensor wait_recv(int tag, const std::string& what);
  void send(int tag, int to, Tensor data);
  // Drops the sends that completed (and their buffers); never waits.
  void release_sent();
  // Lets MPI move every pending message a step further; never waits.
  void progress();
  void wait_sends(const std::string& what);
  int posted_receives() const noexcept { return static_cast<int>(recvs_.size()); }
  int pending_sends() const noexcept { return static_cast<int>(sends_.size()); }
  // Tells every other rank that this one failed (non-blocking, best effort).
  void announce_failure(int rank, int ranks);
  bool peer_failed() const noexcept { return failed_peer_ >= 0; }
  int failed_peer() const noexcept { return failed_peer_; }  // -1: none announced

 private:
  struct Pending {
    MPI_Request request = MPI_REQUEST_NULL;
    int peer = -1;
    Tensor buffer;
  };
  // MPI_Irecv (receive) or MPI_Isend of the whole buffer.
  Pending start(bool receive, int tag, int peer, Tensor buffer);
  void wait(Pending& p, const std::string& what);
  void check_peers();

  MPI_Comm comm_;
  double timeout_s_;
  std::map<int, Pending> recvs_;
  std::vector<Pending> sends_;
  std::vector<int> notice_ = std::vector<int>(1, 0);
  int failed_peer_ = -1;
};

}  // namespace epx::pipeline::detail
