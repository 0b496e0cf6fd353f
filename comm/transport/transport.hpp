// The one-sided transport interface. A transport moves bytes from this rank
// into memory regions of peers it can reach, and raises 64-bit signal slots
// there that become visible only after the puts before them. The dispatch /
// combine protocol (comm/) is written once against this interface and the
// Fabric (fabric.hpp); it never names a backend.
#pragma once

#include <mpi.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "core/wait.hpp"

namespace epx {
class Group;
}

namespace epx::comm::transport {

// What a backend can do, read by the protocol once at setup.
struct TransportCaps {
  std::size_t max_put_bytes = 0;    // largest single put; 0 = unlimited
  std::size_t put_align = 1;        // required alignment of put offsets and sizes
  bool has_remote_atomics = false;  // signals are remote atomic stores
  bool is_intra_node = false;       // reaches only ranks of this node
  bool gpu_memory = false;          // regions may be device memory
  bool load_store = false;          // peer regions are mapped: peer_ptr() may be stored to
  bool allocates = false;           // create_region must allocate (cannot register given memory)
};

// A region is identified by the same small integer on every rank.
using RegionId = int;

// What a backend is built with: the group (topology, failure state) and a
// private communicator of the Fabric for the backend's own set-up collectives.
struct TransportContext {
  Group& group;
  MPI_Comm comm;
  double timeout_s = core::Deadline::kForever;  // bound of the backend's set-up waits
};

class Transport {
 public:
  virtual ~Transport() = default;
  virtual const char* name() const noexcept = 0;
  virtual TransportCaps caps() const noexcept = 0;
  virtual bool can_reach(int peer) const noexcept = 0;

  // Collective over the group: `bytes` of this rank's memory that reachable
  // peers may write. `memory` null: the transport allocates (required when
  // caps().allocates); else it registers the caller's memory. Returns the local
  // base; holding the pointer keeps the local memory mapped. Every rank fails
  // together (and leaves nothing behind) if one cannot; bounded by `deadline`.
  virtual std::shared_ptr<std::byte> create_region(RegionId id, std::size_t bytes,
                                                   std::shared_ptr<std::byte> memory,
                                                   const core::Deadline& deadline) = 0;

  // Pointer to `offset` in `peer`'s region `id`, for direct stores
  // (caps().load_store only; else nullptr).
  virtual void* peer_ptr(int peer, RegionId id, std::size_t offset) = 0;

  // Copies `bytes` from local `src` to `offset` in `peer`'s region `id`.
  // Completion is only guaranteed by a later signal() or flush() to that peer;
  // until one returns, `src` must stay unchanged.
  virtual void put(int peer, const void* src, RegionId id, std::size_t offset,
                   std::size_t bytes) = 0;

  // Stores `value` into the 8-byte slot at `offset` of `peer`'s region `id`,
  // ordered after every earlier put to that peer (release semantics).
  virtual void signal(int peer, RegionId id, std::size_t offset, std::uint64_t value) = 0;

  // Completes all puts and signals issued to `peer` (-1: to every peer).
  virtual void flush(int peer) = 0;

  // Called by every wait loop: lets backends that need it make progress.
  virtual void progress() {}

  // Whether destroying this backend's regions is collective (MPI_Win_free):
  // the Fabric then agrees with every rank before destroying it.
  virtual bool collective_free() const noexcept { return false; }
  // The ranks could not agree (a failure, or a rank that never came): the
  // destructor must not enter a collective; the regions are leaked.
  virtual void abandon() noexcept {}
};

using TransportPtr = std::unique_ptr<Transport>;

}  // namespace epx::comm::transport
