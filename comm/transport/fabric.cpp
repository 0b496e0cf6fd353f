#include "comm/transport/fabric.hpp"

#include <algorithm>
#include <atomic>
#include <cstring>

#include <epx/group.hpp>

#include "comm/transport/registry.hpp"
#include "core/agree.hpp"
#include "core/check.hpp"
#include "core/log.hpp"

namespace epx::comm::transport {

namespace {
// The abort region: at 0 the rank that aborted last, plus one; then one text
// slot per rank, so that ranks aborting at once never write the same bytes.
constexpr std::size_t kAbortTextOffset = 64;
constexpr std::size_t kAbortTextBytes = 448;
}  // namespace

Fabric::Fabric(Group& group, double timeout_s) : group_(group), timeout_s_(timeout_s) {
  const core::Deadline deadline(timeout_s);
  MPI_Comm_dup(group.comm(), &comm_);
  // Set-up errors (a window MPI cannot create, say) come back as codes that
  // epx turns into errors naming the cause, instead of aborting the job.
  MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
  try {
    transports_ = create_transports(TransportContext{group, comm_, timeout_s});
  } catch (...) {
    MPI_Comm_free(&comm_);
    throw;
  }
  route_.assign(group.size(), nullptr);
  caps_.resize(group.size());
  remote_.resize(group.size());
  staging_.resize(group.size());
  for (int peer = 0; peer < group.size(); ++peer) remote_[peer] = group.node_of(peer) != group.node();
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
  // Backends that carry no peer's traffic get no regions. (Whether a backend
  // is used is the same on every rank: nodes are symmetric.)
  std::vector<TransportPtr> used;
  for (auto& t : transports_)
    if (std::find(route_.begin(), route_.end(), t.get()) != route_.end()) used.push_back(std::move(t));
  transports_ = std::move(used);
  std::string names;
  for (auto& t : transports_) names += core::concat(names.empty() ? "" : ", ", t->name());
  std::string err;
  if (unreachable >= 0)
    err = core::concat(core::rank_prefix(), " comm: no transport of this build (", names,
                       ") reaches rank ", unreachable, " (node ", group.node_of(unreachable),
                       ") from node ", group.node());
  core::agree_on_error(comm_, err, ErrorCode::Unsupported, deadline, "comm: transport set-up");
  abort_region_ = create_region(kAbortTextOffset + kAbortTextBytes * group.size(), deadline);
  EPX_LOG(Info, Transport, "fabric over ", group.size(), " ranks with ", names);
  if (core::log_enabled(core::LogLevel::Debug, core::Subsys::Transport)) {
    std::string peers;
    for (int peer = 0; peer < group.size(); ++peer)
      peers += core::concat(peer ? ", " : "", "rank ", peer, " (node ", group.node_of(peer), "): ",
                            route_[peer] ? route_[peer]->name() : "none");
    EPX_LOG(Debug, Transport, "transport per peer: ", peers);
  }
}

Fabric::~Fabric() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  bool collective = false;
  for (auto& t : transports_) collective = collective || t->collective_free();
  bool request_pending = false, free_together = false;
  if (!finalized && collective && !group_.aborted()) free_together = agree_to_free(request_pending);
  if (collective && !free_together)
    for (auto& t : transports_) t->abandon();
  transports_.clear();
  // A communicator with a request still pending cannot be freed: leaked too.
  if (!finalized && !request_pending && comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
}

bool Fabric::agree_to_free(bool& request_pending) {
  // Ranks that saw a failure do not come (they leak at once); the others stop
  // waiting when they find such a rank's abort mark, or at the timeout.
  try {
    return core::allreduce_int(comm_, 0, MPI_MAX, core::Deadline(timeout_s_),
                               "comm: freeing a buffer", [this] {
                                 check_not_aborted();  // progress included
                               }) == 0;
  } catch (const std::exception& e) {
    EPX_LOG(Warn, Transport, "comm: its one-sided windows are leaked: ", e.what());
    request_pending = true;
    return false;
  }
}

RegionId Fabric::create_region(std::size_t bytes, const core::Deadline& deadline) {
  const RegionId id = next_region_++;  // consumed even on failure: names stay unique
  try {
    std::shared_ptr<std::byte> memory;
    // The first backend that must allocate does so; the others register that memory.
    for (auto& t : transports_)
      if (t->caps().allocates && !memory) memory = t->create_region(id, bytes, nullptr, deadline);
    for (auto& t : transports_)
      if (!t->caps().allocates) {
        if (!memory) memory = t->create_region(id, bytes, nullptr, deadline);
        else t->create_region(id, bytes, memory, deadline);
      }
    local_[id] = std::move(memory);
  } catch (const Error& e) {
    if (e.code() == ErrorCode::Timeout) abort(e.what());
    throw;
  }
  return id;
}

void Fabric::check_not_aborted() {
  // Abort marks that have reached this rank but wait for its progress
  // (message transports apply what arrives only then) count too: a rank
  // coming late to a call must see them before it takes older messages
  // from the same peers as this call's.
  for (auto& t : transports_) t->progress();
  if (group_.aborted())
    EPX_THROW(PeerFailure, "comm: the group was aborted earlier: ", group_.abort_reason());
  std::byte* base = local_.at(abort_region_).get();
  auto* word = reinterpret_cast<std::uint64_t*>(base);
  const std::uint64_t who = std::atomic_ref<std::uint64_t>(*word).load(std::memory_order_acquire);
  if (who != 0) {
    const char* text = reinterpret_cast<const char*>(base + kAbortTextOffset +
                                                     (who - 1) * kAbortTextBytes);
    const std::string reason = core::concat("rank ", who - 1, " aborted the group: ",
                                            std::string(text, strnlen(text, kAbortTextBytes - 1)));
    group_.abort(reason);
    EPX_THROW(PeerFailure, "comm: ", reason);
  }
}

void Fabric::abort(const std::string& reason) {
  group_.abort(reason);
  const int me = group_.rank();
  const std::size_t n = std::min(reason.size(), kAbortTextBytes - 1);
  std::string text = reason.substr(0, n);
  text.push_back('\0');
  for (int peer = 0; peer < group_.size(); ++peer) {
    if (peer == me) continue;
    try {
      const std::size_t slot = kAbortTextOffset + static_cast<std::size_t>(me) * kAbortTextBytes;
      route_[peer]->put(peer, text.data(), abort_region_, slot, text.size());
      route_[peer]->signal(peer, abort_region_, 0, std::uint64_t(me) + 1);
      route_[peer]->flush(peer);
    } catch (const std::exception&) {
      // A peer that cannot be told will time out on its own.
    }
  }
}

bool Fabric::reached(RegionId id, std::size_t offset, std::uint64_t want) const {
  auto* word = reinterpret_cast<std::uint64_t*>(local_.at(id).get() + offset);
  return std::atomic_ref<std::uint64_t>(*word).load(std::memory_order_acquire) >= want;
}

void Fabric::wait(RegionId id, std::size_t offset, std::uint64_t want,
                  const core::Deadline& deadline, const std::function<std::string()>& describe) {
  auto* word = reinterpret_cast<std::uint64_t*>(local_.at(id).get() + offset);
  std::atomic_ref<std::uint64_t> ref(*word);
  core::Backoff backoff;
  while (ref.load(std::memory_order_acquire) < want) {
    check_not_aborted();  // progress included
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
