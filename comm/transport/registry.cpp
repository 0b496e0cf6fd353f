#include "comm/transport/registry.hpp"

#include "comm/transport/mpi/mpi_transport.hpp"
#include "comm/transport/msg/msg_transport.hpp"
#include "comm/transport/shm/shm_transport.hpp"
#include "core/config.hpp"

namespace epx::comm::transport {

std::vector<TransportPtr> create_transports(const TransportContext& context) {
  std::vector<TransportPtr> list;
  // In priority order: per peer, the first that reaches it carries the traffic.
  list.push_back(make_shm_transport(context, core::params::shm_direct.get()));
  // Between nodes, one MPI backend: RMA windows, or point-to-point messages
  // (bounded even when a peer stops calling MPI; EPX_MPI_TRANSPORT).
  if (core::params::mpi_transport.get() == "msg")
    list.push_back(make_msg_transport(context));
  else
    list.push_back(make_mpi_transport(context));
  return list;
}

}  // namespace epx::comm::transport
