// shm: the ranks of one node write straight into each other's memory, the CPU
// analogue of NVLink stores. Each region is an anonymous memfd per rank,
// passed to the node's other ranks over Unix sockets (fd_channel.hpp) and
// mapped by all: nothing has a name, so a rank killed at any moment leaves
// nothing behind. Mappings are reference counted, so memory handed out as
// tensors stays valid after the Buffer is gone.
#pragma once

#include "comm/transport/transport.hpp"

namespace epx::comm::transport {

// Collective over the group. `direct`: advertise load_store (EPX_SHM_DIRECT).
TransportPtr make_shm_transport(const TransportContext& context, bool direct);

}  // namespace epx::comm::transport
