// Fabric: the transports of one Buffer seen as one. It picks a backend per
// peer, creates regions on all backends at once, and owns the bounded wait
// loop (deadline, group abort, peers' abort signals) that every phase uses.
#pragma once

#include <functional>
#include <string>
#include <unordered_map>
#include <vector>

#include "comm/transport/transport.hpp"
#include "core/wait.hpp"

namespace epx::comm::transport {

class Fabric {
 public:
  // Collective. Throws Unsupported (on every rank) if some peer is unreachable.
  Fabric(Group& group, double timeout_s);
  // Collective when a backend's regions need a collective free (the mpi
  // transport's windows): waits, up to the timeout, for every rank to destroy
  // its Fabric too. A rank that saw a failure, or finds a peer's abort mark or
  // no peer, leaks those regions instead of entering the collective.
  ~Fabric();
  Fabric(const Fabric&) = delete;
  Fabric& operator=(const Fabric&) = delete;

  Group& group() noexcept { return group_; }
  Transport& to(int peer) { return *route_[peer]; }
  const TransportCaps& caps(int peer) const { return caps_[peer]; }
  const char* name(int peer) const { return route_[peer]->name(); }

  // A payload put (Transport::put), counted when `peer` is on another node:
  // the protocol's inter-node bytes (control messages are not counted).
  void put(int peer, const void* src, RegionId id, std::size_t offset, std::size_t bytes) {
    if (remote_[peer]) internode_bytes_ += bytes;
    route_[peer]->put(peer, src, id, offset, bytes);
  }
  // Payload bytes this rank has put to ranks of other nodes so far.
  std::uint64_t internode_bytes() const noexcept { return internode_bytes_; }

  // Local copies of data put to `peer` (comm/payload.hpp's RowWriter). A put's
  // source must stay unchanged until a signal or flush to that peer returns,
  // so each peer has its own areas, and `in_flight` says they may still be read.
  struct Staging {
    std::vector<std::vector<std::byte>> areas;
    bool in_flight = false;
  };
  Staging& staging(int peer) { return staging_[peer]; }

  // Collective: a new region of `bytes` on this rank (each rank its own size),
  // reachable by every peer. Returns its id (never reused); local(id) is its
  // base, which keeps it mapped while held. A timeout aborts the group.
  RegionId create_region(std::size_t bytes, const core::Deadline& deadline);
  const std::shared_ptr<std::byte>& local(RegionId id) const { return local_.at(id); }

  // Whether the 8-byte word at `offset` of local region `id` is >= want (no wait).
  bool reached(RegionId id, std::size_t offset, std::uint64_t want) const;
  // Waits until the 8-byte word at `offset` of local region `id` is >= want.
  // On timeout: aborts the group (peers fail fast) and throws Timeout with
  // describe()'s text; on a peer's abort throws PeerFailure.
  void wait(RegionId id, std::size_t offset, std::uint64_t want, const core::Deadline& deadline,
            const std::function<std::string()>& describe);

  // Marks the group failed and tells every peer (their waits then fail fast).
  void abort(const std::string& reason);
  // Lets every backend make progress, then throws PeerFailure if this group
  // was aborted (by this rank or a peer).
  void check_not_aborted();

 private:
  Group& group_;
  double timeout_s_;
  MPI_Comm comm_ = MPI_COMM_NULL;  // private: set-up collectives of this fabric only
  std::vector<TransportPtr> transports_;
  std::vector<Transport*> route_;  // by peer
  std::vector<TransportCaps> caps_;
  std::vector<char> remote_;  // by peer: on another node
  std::uint64_t internode_bytes_ = 0;
  std::vector<Staging> staging_;  // by peer
  std::unordered_map<RegionId, std::shared_ptr<std::byte>> local_;
  RegionId next_region_ = 0;
  RegionId abort_region_ = -1;

  // ~Fabric: whether every rank agrees to free collectively, bounded; false
  // leaves `comm_` with a pending request (it is then not freed either).
  bool agree_to_free(bool& request_pending);
};

}  // namespace epx::comm::transport
