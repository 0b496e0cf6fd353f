// mpi: one-sided puts between any two ranks through MPI-3 RMA (passive
// target: MPI_Win_lock_all once, MPI_Put, MPI_Win_flush, and an atomic
// MPI_Accumulate(REPLACE) signal issued after the flush of the puts before
// it). Open MPI maps it onto RDMA on InfiniBand/RoCE; on one host it also
// carries traffic between virtual nodes, so the inter-node path is tested.
#pragma once

#include "comm/transport/transport.hpp"

namespace epx::comm::transport {

// Collective over the group.
TransportPtr make_mpi_transport(const TransportContext& context);

}  // namespace epx::comm::transport
