#include "comm/transport/registry.hpp"

#include <epx/config.hpp>
#include <epx/group.hpp>

#include "comm/transport/mpi/mpi_transport.hpp"
#include "comm/transport/msg/msg_transport.hpp"
#include "comm/transport/shm/shm_transport.hpp"
#include "core/check.hpp"
#include "core/config.hpp"
#include "core/log.hpp"
#if EPX_HAVE_UCX
#include "comm/transport/ucx/ucx_transport.hpp"
#endif

namespace epx::comm::transport {

InternodeChoice internode_choice() {
  const std::string& v = core::params::internode_transport.get();
  if (v != "auto") {
    EPX_CHECK(v != "ucx" || EPX_HAVE_UCX, InvalidArgument,
              "EPX_INTERNODE_TRANSPORT=ucx, but this build of epx has no UCX (install "
              "libucx-dev and configure again; or choose rma or msg)");
    return {v, "EPX_INTERNODE_TRANSPORT=" + v, true};
  }
  if (core::params::mpi_transport.from_env()) {
    const std::string& old = core::params::mpi_transport.get();
    return {old, "EPX_MPI_TRANSPORT=" + old, true};
  }
#if EPX_HAVE_UCX
  return {"ucx", core::concat("default: this build has UCX ", ucx_version()), false};
#else
  return {"rma", "default: this build has no UCX", false};
#endif
}

std::vector<TransportPtr> create_transports(const TransportContext& context) {
  std::vector<TransportPtr> list;
  // In priority order: per peer, the first that reaches it carries the traffic.
  list.push_back(make_shm_transport(context, core::params::shm_direct.get()));
  // Between nodes: UCX (when built with it), then one MPI backend, RMA
  // windows or point-to-point messages. Every rank reads the same settings,
  // so every rank makes the same list.
  const InternodeChoice choice = internode_choice();
  if (context.group.num_nodes() > 1)
    EPX_LOG(Debug, Transport, "inter-node transport: ", choice.name, " (", choice.why, ")");
#if EPX_HAVE_UCX
  if (choice.name == "ucx" && context.group.num_nodes() > 1) {
    try {
      list.push_back(make_ucx_transport(context));
    } catch (const Error& e) {
      // Every rank failed together (the transport agrees on its set-up);
      // by default they all fall back to MPI RMA.
      if (choice.explicit_choice || e.code() != ErrorCode::Unsupported) throw;
      EPX_LOG(Warn, Transport, "UCX cannot start, using MPI RMA between nodes instead: ", e.what());
    }
  }
#endif
  if (choice.name == "msg")
    list.push_back(make_msg_transport(context));
  else
    list.push_back(make_mpi_transport(context));
  return list;
}

}  // namespace epx::comm::transport
