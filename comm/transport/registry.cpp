#include "comm/transport/registry.hpp"

#include <filesystem>
#include <system_error>

#include <epx/config.hpp>
#include <epx/group.hpp>

#include "comm/transport/mpi/mpi_transport.hpp"
#include "comm/transport/msg/msg_transport.hpp"
#include "comm/transport/shm/shm_transport.hpp"
#include "core/agree.hpp"
#include "core/check.hpp"
#include "core/config.hpp"
#include "core/log.hpp"
#if EPX_HAVE_UCX
#include "comm/transport/ucx/ucx_transport.hpp"
#endif

namespace epx::comm::transport {

bool host_has_rdma_device() {
  // Every RDMA device (InfiniBand, RoCE, iWARP) has an entry here.
  std::error_code ec;
  std::filesystem::directory_iterator it("/sys/class/infiniband", ec);
  return !ec && it != std::filesystem::directory_iterator();
}

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
  // By default UCX carries the traffic only where the host has an RDMA
  // device: that is what it is for. Over TCP, msg measured fastest (dispatch
  // 1.2-1.4x of MPI_Alltoallv against 1.0x for rma and 0.42x for ucx on the
  // emulated cluster, docs/internode.md), its waits are all bounded (RMA's
  // MPI_Win_flush can block on a peer that stopped calling MPI), and it needs
  // no one-sided MPI component (Debian's stock osc setting has none that
  // works across TCP nodes).
#if EPX_HAVE_UCX
  if (host_has_rdma_device())
    return {"ucx", core::concat("default: an RDMA device and UCX ", ucx_version()), false};
  return {"msg", core::concat("default: no RDMA device; this build also has UCX ", ucx_version(),
                              ": EPX_INTERNODE_TRANSPORT=ucx"),
          false};
#else
  return {"msg", "default: this build has no UCX", false};
#endif
}

std::vector<TransportPtr> create_transports(const TransportContext& context) {
  std::vector<TransportPtr> list;
  // In priority order: per peer, the first that reaches it carries the traffic.
  list.push_back(make_shm_transport(context, core::params::shm_direct.get()));
  // Between nodes: UCX (when built with it), then one MPI backend, RMA
  // windows or point-to-point messages. Every rank reads the same settings,
  // so every rank makes the same list.
  InternodeChoice choice = internode_choice();
  if (!choice.explicit_choice && context.group.num_nodes() > 1) {
    // The default depends on the host; the ranks must still make the same
    // list, so UCX only if every host has an RDMA device.
    const int all = core::allreduce_int(context.comm, choice.name == "ucx" ? 1 : 0, MPI_MIN,
                                        core::Deadline(context.timeout_s),
                                        "agreeing on the inter-node transport");
    if (choice.name == "ucx" && !all)
      choice = {"msg", "default: some host has no RDMA device", false};
  }
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
