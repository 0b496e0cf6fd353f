// ucx: one-sided puts to the ranks of other nodes through UCX (ucp): verbs on
// InfiniBand/RoCE, tcp (and shared memory between virtual nodes) elsewhere.
//
// Set-up (collective, polled against the deadline): every rank's worker
// address goes to every rank (MPI_Iallgatherv), and each rank creates one
// endpoint per rank of another node. A region is registered with
// ucp_mem_map; its packed rkey and base address go to every rank once, when
// it is created.
//
// Data: a put is ucp_put_nbx. One that UCX cannot complete at once (a large
// put, a full send queue) is issued again from a copy that the transport
// owns until UCX is done with it, so `src` is free when put() returns and no
// call ever waits for a peer. A signal starts ucp_ep_flush_nbx of the puts
// before it and stores its value (an 8-byte put) only once that flush has
// completed at the target; signals to one peer are stored in order. Progress
// (ucp_worker_progress) runs in every wait of the Fabric, in each signal and
// flush, and in large puts: on tcp the target's CPU serves incoming puts.
// An endpoint error (a peer gone) makes later puts and signals to that peer
// throw PeerFailure naming it.
#pragma once

#include "comm/transport/transport.hpp"

namespace epx::comm::transport {

// Collective over the group. Every rank gets a transport, or every rank
// throws (Unsupported when UCX cannot start on some rank, naming it).
TransportPtr make_ucx_transport(const TransportContext& context);

// The UCX library's version ("1.13.1").
const char* ucx_version();

}  // namespace epx::comm::transport
