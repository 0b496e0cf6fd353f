// The ordered list of backends. Per peer, the first backend that can reach it
// wins (NCCL's transport list with canConnect). Adding a backend touches its
// folder, one line in registry.cpp and one CMake `if`.
#pragma once

#include <vector>

#include "comm/transport/transport.hpp"

namespace epx::comm::transport {

// Collective: creates every backend compiled in, in priority order.
std::vector<TransportPtr> create_transports(const TransportContext& context);

}  // namespace epx::comm::transport
