// msg: one-sided puts between any two ranks, built from MPI point-to-point
// messages, so that no call ever blocks on a peer. MPI-3 RMA cannot do that:
// the signal must follow the puts before it, which takes MPI_Win_flush, and
// MPI has no non-blocking flush (Open MPI's osc/ucx and osc/pt2pt wait in it
// for the target to enter MPI; a rank stalled outside MPI held its peers
// there past their timeout).
//
// A put copies the bytes and sends a header (region, offset, size) and the
// payload with MPI_Isend; a signal is a header with the value. The target's
// progress(), called by every wait, receives the headers in order per
// source, posts MPI_Irecv of each payload straight into its region, and
// stores a signal only once every payload before it from that source has
// arrived. Nothing waits: senders poll their requests, receivers apply what
// has come, and the Fabric's bounded waits stay the only waits. It needs no
// one-sided component, so it works with any MPI (Debian's stock Open MPI
// across TCP nodes included).
#pragma once

#include "comm/transport/transport.hpp"

namespace epx::comm::transport {

// Collective over the group.
TransportPtr make_msg_transport(const TransportContext& context);

}  // namespace epx::comm::transport
