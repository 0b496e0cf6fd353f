#include "comm/transport/registry.hpp"

#include "comm/transport/mpi/mpi_transport.hpp"
#include "comm/transport/shm/shm_transport.hpp"
#include "core/config.hpp"

namespace epx::comm::transport {

std::vector<TransportPtr> create_transports(const TransportContext& context) {
  std::vector<TransportPtr> list;
  // In priority order: per peer, the first that reaches it carries the traffic.
  list.push_back(make_shm_transport(context, core::params::shm_direct.get()));
  list.push_back(make_mpi_transport(context));
  return list;
}

}  // namespace epx::comm::transport
