#include "comm/transport/registry.hpp"

#include "comm/transport/shm/shm_transport.hpp"
#include "core/config.hpp"

namespace epx::comm::transport {

std::vector<TransportPtr> create_transports(const TransportContext& context) {
  std::vector<TransportPtr> list;
  list.push_back(make_shm_transport(context, core::params::shm_direct.get()));
  return list;
}

}  // namespace epx::comm::transport
