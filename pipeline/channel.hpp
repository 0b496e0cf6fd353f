// Point-to-point for the executor: receives posted ahead, sends in flight,
// and waits that end at a deadline or when the group is aborted (by a peer's
// failure, another module's, or the user: Group::abort is the one channel).
// Internal to the pipeline module.
#pragma once

#include <mpi.h>

#include <map>
#include <string>
#include <vector>

#include <epx/group.hpp>
#include <epx/tensor.hpp>

#include "core/wait.hpp"

namespace epx::pipeline::detail {

class Channel {
 public:
  // Message tags start at 1. `group` is the executor's: its abort ends every wait.
  Channel(MPI_Comm comm, double timeout_s, Group group)
      : comm_(comm), timeout_s_(timeout_s), group_(std::move(group)) {}
  ~Channel();  // frees what is left (after a failure) without waiting

  void post_recv(int tag, int from, Tensor buffer);
  // Waits for the receive posted under `tag`; throws Timeout naming `what`
  // and the peer, or PeerFailure when the group was aborted.
  Tensor wait_recv(int tag, const std::string& what);
  void send(int tag, int to, Tensor data);
  // Drops the sends that completed (and their buffers); never waits.
  void release_sent();
  // Lets MPI move every pending message a step further; never waits.
  void progress();
  void wait_sends(const std::string& what);
  int posted_receives() const noexcept { return static_cast<int>(recvs_.size()); }
  int pending_sends() const noexcept { return static_cast<int>(sends_.size()); }
  // Throws PeerFailure, naming `what` and the reason, if the group was aborted.
  void check_group(const std::string& what);
  // Whether a wait ended because the group was aborted (by another rank or
  // module), rather than by this rank's own failure.
  bool peer_failed() const noexcept { return peer_failed_; }
  Group& group() noexcept { return group_; }

 private:
  struct Pending {
    MPI_Request request = MPI_REQUEST_NULL;
    int peer = -1;
    Tensor buffer;
  };
  // MPI_Irecv (receive) or MPI_Isend of the whole buffer.
  Pending start(bool receive, int tag, int peer, Tensor buffer);
  void wait(Pending& p, const std::string& what);

  MPI_Comm comm_;
  double timeout_s_;
  std::map<int, Pending> recvs_;
  std::vector<Pending> sends_;
  Group group_;
  bool peer_failed_ = false;
};

}  // namespace epx::pipeline::detail
