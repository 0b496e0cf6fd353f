#include "pipeline/channel.hpp"

#include "core/check.hpp"

namespace epx::pipeline::detail {

Channel::~Channel() {
  // Only reached with requests left after a failure: cancel the receives,
  // leave the sends to MPI. Either may still touch its buffer after
  // MPI_Request_free (a cancel need not take, a freed send still goes), so
  // those buffers are kept for the rest of the process: a failed executor is
  // never used again, and a few buffers leaked beat memory freed under MPI.
  static auto* kept = new std::vector<Tensor>;
  for (auto& [tag, p] : recvs_) {
    if (p.request != MPI_REQUEST_NULL) {
      MPI_Cancel(&p.request);
      MPI_Request_free(&p.request);
      kept->push_back(std::move(p.buffer));
    }
  }
  for (Pending& p : sends_) {
    if (p.request != MPI_REQUEST_NULL) {
      MPI_Request_free(&p.request);
      kept->push_back(std::move(p.buffer));
    }
  }
}

Channel::Pending Channel::start(bool receive, int tag, int peer, Tensor buffer) {
  Pending p;
  p.peer = peer;
  p.buffer = std::move(buffer);
  const int bytes = static_cast<int>(p.buffer.nbytes());
  if (receive) {
    MPI_Irecv(p.buffer.raw(), bytes, MPI_BYTE, peer, tag, comm_, &p.request);
  } else {
    MPI_Isend(p.buffer.raw(), bytes, MPI_BYTE, peer, tag, comm_, &p.request);
  }
  return p;
}

void Channel::post_recv(int tag, int from, Tensor buffer) {
  EPX_CHECK(recvs_.emplace(tag, start(true, tag, from, std::move(buffer))).second, Internal,
            "pipeline executor: two receives posted with tag ", tag);
}

Tensor Channel::wait_recv(int tag, const std::string& what) {
  auto it = recvs_.find(tag);
  EPX_CHECK(it != recvs_.end(), Internal, "pipeline executor: no receive posted for ", what);
  wait(it->second, what);
  Tensor out = std::move(it->second.buffer);
  recvs_.erase(it);
  return out;
}

void Channel::send(int tag, int to, Tensor data) {
  sends_.push_back(start(false, tag, to, std::move(data)));
}

void Channel::release_sent() {
  std::erase_if(sends_, [](Pending& p) {
    int done = 0;
    MPI_Test(&p.request, &done, MPI_STATUS_IGNORE);
    return done != 0;
  });
}

void Channel::progress() {
  // A completed receive's request becomes MPI_REQUEST_NULL, which wait()
  // then finds complete at once.
  for (auto& [tag, p] : recvs_) {
    int done = 0;
    if (p.request != MPI_REQUEST_NULL) MPI_Test(&p.request, &done, MPI_STATUS_IGNORE);
  }
  release_sent();
}

void Channel::wait_sends(const std::string& what) {
  for (Pending& p : sends_) wait(p, what);
  sends_.clear();
}

void Channel::check_group(const std::string& what) {
  if (!group_.aborted()) return;
  peer_failed_ = true;
  EPX_THROW(PeerFailure, "pipeline executor: ", what, ": ", group_.abort_reason());
}

void Channel::wait(Pending& p, const std::string& what) {
  const core::Deadline deadline(timeout_s_);
  core::Backoff backoff;
  for (;;) {
    int done = 0;
    MPI_Test(&p.request, &done, MPI_STATUS_IGNORE);
    if (done) return;
    check_group(what);
    EPX_CHECK(!deadline.expired(), Timeout, "pipeline executor: ", what, ": no progress with rank ",
              p.peer, " after ", timeout_s_, " s");
    backoff.pause();
  }
}

}  // namespace epx::pipeline::detail
