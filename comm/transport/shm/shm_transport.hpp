// shm: the ranks of one node write straight into each other's memory, the CPU
// analogue of NVLink stores. Each region is a POSIX shared-memory object per
// rank, mapped by every rank of the node; mappings are reference counted, so
// memory handed out as tensors stays valid after the Buffer is gone.
#pragma once

#include "comm/transport/transport.hpp"

namespace epx::comm::transport {

// Collective over the group. `direct`: advertise load_store (EPX_SHM_DIRECT).
TransportPtr make_shm_transport(const TransportContext& context, bool direct);

}  // namespace epx::comm::transport
