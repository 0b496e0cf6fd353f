#include "comm/transport/fabric.hpp"

#include <algorithm>
#include <atomic>
#include <cstring>

#include <epx/group.hpp>

#include "comm/transport/registry.hpp"
#include "core/check.hpp"
#include "core/log.hpp"

namespace epx::comm::transport {

namespace {
// The abort region: the aborting rank + 1 at offset 0, its reason after it.
constexpr std::size_t kAbortTextOffset = 64;
constexpr std::size_t kAbortTextBytes = 448;
}  // namespace

Fabric::Fabric(Group& group) : group_(group) {
  transports_ = create_transports(group);
  route_.assign(group.size(), nullptr);
  caps_.resize(group.size());
  int unreachable = -1;
  for (int peer = 0; peer < group.size(); ++peer) {
    for (auto& t : transports_) {
      if (t->can_reach(peer)) {
        route_[peer] = t.get();
        caps_[peer] = t->caps();
        break;
      }
    }
    if (!route_[peer] && unreachable < 0) unreachable = peer;
  }
  // Reachability is symmetric in every backend, but agree anyway so no rank
  // goes on alone.
  int any = unreachable;
  MPI_Allreduce(MPI_IN_PLACE, &any, 1, MPI_INT, MPI_MAX, group.comm());
  if (any >= 0) {
    std::string names;
    for (auto& t : transports_) names += core::concat(names.empty() ? "" : ", ", t->name());
    if (unreachable >= 0)
      EPX_THROW(Unsupported, "comm: no transport of this build (", names, ") reaches rank ",
                unreachable, " (node ", group.node_of(unreachable), ") from node ", group.node(),
                "; inter-node transports are not built in yet");
    EPX_THROW(Unsupported, "comm: rank ", any, " cannot reach all peers with (", names, ")");
  }
  abort_region_ = create_region(kAbortTextOffset + kAbortTextBytes);
  EPX_LOG(Info, Transport, "fabric over ", group.size(), " ranks: peer 0 via ", route_[0]->name());
}

Fabric::~Fabric() = default;

RegionId Fabric::create_region(std::size_t bytes) {
  const RegionId id = static_cast<RegionId>(local_.size());
  std::shared_ptr<std::byte> memory;
  // The first backend that must allocate does so; the others register that memory.
  for (auto& t : transports_)
    if (t->caps().allocates && !memory) memory = t->create_region(id, bytes, nullptr);
  for (auto& t : transports_)
    if (!t->caps().allocates) {
      if (!memory) memory = t->create_region(id, bytes, nullptr);
      else t->create_region(id, bytes, memory);
    }
  local_.push_back(memory);
  return id;
}

void Fabric::check_not_aborted() {
  if (group_.aborted())
    EPX_THROW(PeerFailure, "comm: the group was aborted earlier: ", group_.abort_reason());
  auto* word = reinterpret_cast<std::uint64_t*>(local_[abort_region_].get());
  const std::uint64_t who = std::atomic_ref<std::uint64_t>(*word).load(std::memory_order_acquire);
  if (who != 0) {
    const char* text = reinterpret_cast<const char*>(local_[abort_region_].get() + kAbortTextOffset);
    const std::string reason = core::concat("rank ", who - 1, " aborted the group: ",
                                            std::string(text, strnlen(text, kAbortTextBytes - 1)));
    group_.abort(reason);
    EPX_THROW(PeerFailure, "comm: ", reason);
  }
}

void Fabric::abort(const std::string& reason) {
  group_.abort(reason);
  for (int peer = 0; peer < group_.size(); ++peer) {
    if (peer == group_.rank()) continue;
    try {
      const std::size_t n = std::min(reason.size(), kAbortTextBytes - 1);
      route_[peer]->put(peer, reason.c_str(), abort_region_, kAbortTextOffset, n + 1);
      route_[peer]->signal(peer, abort_region_, 0, std::uint64_t(group_.rank()) + 1);
      route_[peer]->flush(peer);
    } catch (const std::exception&) {
      // A peer that cannot be told will time out on its own.
    }
  }
}

void Fabric::wait(RegionId id, std::size_t offset, std::uint64_t want,
                  const core::Deadline& deadline, const std::function<std::string()>& describe) {
  auto* word = reinterpret_cast<std::uint64_t*>(local_[id].get() + offset);
  std::atomic_ref<std::uint64_t> ref(*word);
  core::Backoff backoff;
  while (ref.load(std::memory_order_acquire) < want) {
    check_not_aborted();
    for (auto& t : transports_) t->progress();
    if (deadline.expired()) {
      const std::string what = core::concat(describe(), ": timed out after ", deadline.seconds(),
                                            " s (signal ", ref.load(), ", want ", want, ")");
      abort(what);
      EPX_THROW(Timeout, what);
    }
    backoff.pause();
  }
}

}  // namespace epx::comm::transport
