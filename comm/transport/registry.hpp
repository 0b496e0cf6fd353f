// The ordered list of backends. Per peer, the first backend that can reach it
// wins (NCCL's transport list with canConnect). Adding a backend touches its
// folder, one line in registry.cpp and one CMake `if`.
#pragma once

#include <string>
#include <vector>

#include "comm/transport/transport.hpp"

namespace epx::comm::transport {

// Collective: creates every backend compiled in, in priority order.
std::vector<TransportPtr> create_transports(const TransportContext& context);

// Which backend carries the traffic between nodes, from EPX_INTERNODE_TRANSPORT
// (or the older EPX_MPI_TRANSPORT), the build and the host: "ucx", "rma" or
// "msg", and why ("default: no RDMA device; ..."). By default ucx where the
// build has UCX and the host an RDMA device, else msg. Throws InvalidArgument
// for ucx in a build without UCX.
struct InternodeChoice {
  std::string name;
  std::string why;
  bool explicit_choice = false;  // chosen by the user, not by default
};
InternodeChoice internode_choice();

// Whether /sys/class/infiniband lists a device (InfiniBand, RoCE, iWARP).
bool host_has_rdma_device();

}  // namespace epx::comm::transport
