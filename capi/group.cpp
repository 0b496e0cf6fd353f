// The C ABI of epx::Group.
#include "capi/capi.hpp"

using epx::capi::guard;
using epx::capi::need;

namespace {
// The getters share one shape: check both pointers, read one field.
template <class F>
epxResult_t get_int(const char* call, epxGroup_t group, int* out, F field) {
  return guard(call, [&] {
    need(group, call, "group");
    *need(out, call, "the output pointer") = field(group->group);
  });
}
}  // namespace

extern "C" {

epxResult_t epxGroupCreate(MPI_Comm comm, int ranks_per_node, epxGroup_t* group) {
  return guard("epxGroupCreate", [&] {
    // Checked after the collective construction: a NULL here must not leave
    // the other ranks waiting in it. The Group is then dropped again.
    auto g = std::make_unique<epxGroup_s>(epxGroup_s{epx::Group(comm, ranks_per_node)});
    *need(group, "epxGroupCreate", "group (the output pointer)") = g.release();
  });
}

epxResult_t epxGroupDestroy(epxGroup_t group) {
  return guard("epxGroupDestroy", [&] { delete group; });
}

epxResult_t epxGroupRank(epxGroup_t group, int* rank) {
  return get_int("epxGroupRank", group, rank, [](const epx::Group& g) { return g.rank(); });
}
epxResult_t epxGroupSize(epxGroup_t group, int* size) {
  return get_int("epxGroupSize", group, size, [](const epx::Group& g) { return g.size(); });
}
epxResult_t epxGroupNode(epxGroup_t group, int* node) {
  return get_int("epxGroupNode", group, node, [](const epx::Group& g) { return g.node(); });
}
epxResult_t epxGroupNumNodes(epxGroup_t group, int* num_nodes) {
  return get_int("epxGroupNumNodes", group, num_nodes,
                 [](const epx::Group& g) { return g.num_nodes(); });
}
epxResult_t epxGroupLocalRank(epxGroup_t group, int* local_rank) {
  return get_int("epxGroupLocalRank", group, local_rank,
                 [](const epx::Group& g) { return g.local_rank(); });
}
epxResult_t epxGroupLocalSize(epxGroup_t group, int* local_size) {
  return get_int("epxGroupLocalSize", group, local_size,
                 [](const epx::Group& g) { return g.local_size(); });
}

epxResult_t epxGroupAbort(epxGroup_t group, const char* reason) {
  return guard("epxGroupAbort", [&] {
    need(group, "epxGroupAbort", "group")->group.abort(reason ? reason : "epxGroupAbort");
  });
}

epxResult_t epxGroupGetAsyncError(epxGroup_t group, epxResult_t* status) {
  return guard("epxGroupGetAsyncError", [&] {
    need(group, "epxGroupGetAsyncError", "group");
    need(status, "epxGroupGetAsyncError", "status");
    *status = epxSuccess;
    if (group->group.aborted()) {
      *status = epxPeerFailure;
      // The reason goes where every failure's sentence goes.
      epx::capi::fail(epxPeerFailure,
                      group->group.tag() + " group aborted: " + group->group.abort_reason());
    }
  });
}

}  // extern "C"
