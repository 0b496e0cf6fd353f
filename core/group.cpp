#include <epx/group.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <map>
#include <mutex>
#include <random>

#include "core/check.hpp"
#include "core/config.hpp"
#include "core/log.hpp"

namespace epx {

namespace {
constexpr int kAbortTag = 1;
constexpr int kAbortBytes = 512;  // a reason is cut to this (small: sent eagerly, never waited)
constexpr std::int64_t kPollNs = 50'000;

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
}  // namespace

struct Group::Impl {
  MPI_Comm comm = MPI_COMM_NULL;
  MPI_Comm node_comm = MPI_COMM_NULL;
  // The failure channel: a private duplicate on which every rank keeps one
  // receive posted; abort() sends its reason to every peer there. Whatever
  // epx waits on polls it through aborted(), so one rank's abort (the
  // user's, or a module's after a failure) reaches every rank and module.
  // A message is this group's nonce (drawn by rank 0 at construction), then
  // the reason: MPI reuses the ids of freed communicators, so a late message
  // meant for a group gone by now must not abort a new one.
  MPI_Comm abort_comm = MPI_COMM_NULL;
  MPI_Request abort_recv = MPI_REQUEST_NULL;
  std::uint64_t nonce = 0;
  char abort_in[sizeof(std::uint64_t) + kAbortBytes] = {};
  std::string abort_out;  // the sent message; lives as long as the sends may
  // The channel is polled at most every kPollNs (aborted() sits in hot waits).
  std::int64_t next_poll_ns = 0;

  void post_abort_recv() {
    MPI_Irecv(abort_in, static_cast<int>(sizeof abort_in), MPI_CHAR, MPI_ANY_SOURCE, kAbortTag,
              abort_comm, &abort_recv);
  }
  int rank = 0, size = 1;
  int ranks_per_node = 0;  // 0: physical hosts
  std::vector<int> node_of;
  std::vector<int> node_ranks;
  int node = 0, num_nodes = 1, local_rank = 0;
  std::atomic<bool> aborted{false};
  mutable std::mutex mutex;
  std::string abort_reason;

  ~Impl() {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized) return;  // too late to free; MPI released everything
    if (abort_recv != MPI_REQUEST_NULL) {
      MPI_Cancel(&abort_recv);
      MPI_Wait(&abort_recv, MPI_STATUS_IGNORE);
    }
    if (abort_comm != MPI_COMM_NULL) MPI_Comm_free(&abort_comm);
    if (node_comm != MPI_COMM_NULL) MPI_Comm_free(&node_comm);
    if (comm != MPI_COMM_NULL) MPI_Comm_free(&comm);
  }
};

namespace {

constexpr int kBadShape = -1000000;  // a rank could not read its ranks_per_node

std::string tag_of(int rank, int size) { return core::concat("[rank ", rank, "/", size, "]"); }

// Fills node_of, node_ranks, node, num_nodes, local_rank and node_comm of `g`
// from its comm. Collective; every rank reaches the same verdict on errors.
void build_topology(Group::Impl& g, int requested_rpn, const std::string& own_error) {
  // Every rank must ask for the same shape.
  std::vector<int> rpn(g.size);
  MPI_Allgather(&requested_rpn, 1, MPI_INT, rpn.data(), 1, MPI_INT, g.comm);
  if (!own_error.empty()) throw Error(ErrorCode::InvalidArgument, own_error);
  for (int r = 0; r < g.size; ++r)
    EPX_CHECK(rpn[r] != kBadShape, InvalidArgument, "Group: rank ", r,
              " has an invalid EPX_RANKS_PER_NODE (see its error)");
  for (int r = 0; r < g.size; ++r)
    EPX_CHECK(rpn[r] == rpn[0], InvalidArgument, "Group: ranks_per_node = ", rpn[r],
              " on rank ", r, " but ", rpn[0], " on rank 0; all ranks must agree");
  EPX_CHECK(requested_rpn >= 0, InvalidArgument, "Group: ranks_per_node = ", requested_rpn,
            ", expected >= 0 (0: one node per host)");
  g.ranks_per_node = requested_rpn;

  // Physical hosts: each rank learns the lowest group rank on its host.
  MPI_Comm host_comm;
  MPI_Comm_split_type(g.comm, MPI_COMM_TYPE_SHARED, g.rank, MPI_INFO_NULL, &host_comm);
  int host_leader = g.rank;
  MPI_Allreduce(MPI_IN_PLACE, &host_leader, 1, MPI_INT, MPI_MIN, host_comm);
  MPI_Comm_free(&host_comm);
  std::vector<int> host_of(g.size);
  MPI_Allgather(&host_leader, 1, MPI_INT, host_of.data(), 1, MPI_INT, g.comm);

  g.node_of.assign(g.size, 0);
  if (requested_rpn > 0) {
    for (int r = 0; r < g.size; ++r) {
      g.node_of[r] = r / requested_rpn;
      const int first = g.node_of[r] * requested_rpn;
      EPX_CHECK(host_of[r] == host_of[first], InvalidArgument,
                "Group: ranks_per_node = ", requested_rpn, " puts ranks ", first, " and ", r,
                " on one virtual node, but they run on different hosts");
    }
  } else {
    std::map<int, int> index;  // host leader -> node index, in rank order
    for (int r = 0; r < g.size; ++r) index.emplace(host_of[r], 0);
    int i = 0;
    for (auto& kv : index) kv.second = i++;
    for (int r = 0; r < g.size; ++r) g.node_of[r] = index[host_of[r]];
  }
  g.node = g.node_of[g.rank];
  g.num_nodes = *std::max_element(g.node_of.begin(), g.node_of.end()) + 1;
  g.node_ranks.clear();
  for (int r = 0; r < g.size; ++r)
    if (g.node_of[r] == g.node) g.node_ranks.push_back(r);
  g.local_rank = static_cast<int>(
      std::find(g.node_ranks.begin(), g.node_ranks.end(), g.rank) - g.node_ranks.begin());
  MPI_Comm_split(g.comm, g.node, g.rank, &g.node_comm);
}

}  // namespace

Group::Group(MPI_Comm comm, int ranks_per_node) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  EPX_CHECK(initialized, InvalidArgument, "Group: MPI is not initialised; call MPI_Init first");
  EPX_CHECK(comm != MPI_COMM_NULL, InvalidArgument, "Group: comm is MPI_COMM_NULL");
  auto impl = std::make_shared<Impl>();
  MPI_Comm_dup(comm, &impl->comm);
  MPI_Comm_rank(impl->comm, &impl->rank);
  MPI_Comm_size(impl->comm, &impl->size);
  // Errors of this process carry the world rank from now on.
  int wr = 0, ws = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &wr);
  MPI_Comm_size(MPI_COMM_WORLD, &ws);
  if (core::rank_prefix().empty()) core::set_rank_prefix(tag_of(wr, ws));
  // A bad EPX_RANKS_PER_NODE on one rank must fail every rank, not leave the
  // others in the first collective: it travels as a marker in the shape exchange.
  int rpn = ranks_per_node;
  std::string env_error;
  if (rpn == 0) {
    try {
      rpn = core::params::ranks_per_node.get();
    } catch (const Error& e) {
      env_error = e.what();
      rpn = kBadShape;
    }
  }
  build_topology(*impl, rpn, env_error);
  MPI_Comm_dup(impl->comm, &impl->abort_comm);
  // A failed peer must not turn into an MPI error that kills this rank.
  MPI_Comm_set_errhandler(impl->abort_comm, MPI_ERRORS_RETURN);
  if (impl->rank == 0) {
    std::random_device random;
    impl->nonce =
        (std::uint64_t{random()} << 32) ^ random() ^
        static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
  }
  MPI_Bcast(&impl->nonce, 1, MPI_UINT64_T, 0, impl->comm);
  impl->post_abort_recv();
  EPX_LOG(Info, Core, "group of ", impl->size, " ranks: node ", impl->node, "/", impl->num_nodes,
          ", local rank ", impl->local_rank, "/", impl->node_ranks.size());
  impl_ = std::move(impl);
}

Group::~Group() = default;
Group::Group(const Group&) = default;
Group& Group::operator=(const Group&) = default;

int Group::rank() const noexcept { return impl_->rank; }
int Group::size() const noexcept { return impl_->size; }
int Group::node() const noexcept { return impl_->node; }
int Group::num_nodes() const noexcept { return impl_->num_nodes; }
int Group::local_rank() const noexcept { return impl_->local_rank; }
int Group::local_size() const noexcept { return static_cast<int>(impl_->node_ranks.size()); }
const std::vector<int>& Group::node_ranks() const noexcept { return impl_->node_ranks; }
MPI_Comm Group::comm() const noexcept { return impl_->comm; }
MPI_Comm Group::node_comm() const noexcept { return impl_->node_comm; }

int Group::node_of(int rank) const {
  EPX_CHECK(rank >= 0 && rank < impl_->size, InvalidArgument, "Group::node_of: rank = ",
            rank, ", expected 0 <= rank < ", impl_->size);
  return impl_->node_of[rank];
}

Group Group::split(int color, int key) const {
  EPX_CHECK(color >= 0, InvalidArgument, "Group::split: color = ", color,
            ", expected >= 0 (every rank joins one of the new groups)");
  MPI_Comm sub;
  MPI_Comm_split(impl_->comm, color, key, &sub);
  struct Free {  // the new Group keeps its own duplicate
    MPI_Comm& c;
    ~Free() { MPI_Comm_free(&c); }
  } free_sub{sub};
  return Group(sub, impl_->ranks_per_node);
}

void Group::abort(const std::string& reason) {
  Impl& g = *impl_;
  {
    std::lock_guard<std::mutex> lock(g.mutex);
    if (g.aborted.load()) return;  // the first reason stays (a peer's too)
    g.abort_reason = reason;
    g.aborted.store(true, std::memory_order_release);
    // Tell every peer, without waiting: a small message goes out eagerly, and
    // a peer that is gone must not hold this rank up.
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized && g.abort_comm != MPI_COMM_NULL) {
      g.abort_out.assign(reinterpret_cast<const char*>(&g.nonce), sizeof g.nonce);
      g.abort_out += reason.substr(0, kAbortBytes - 1);
      for (int peer = 0; peer < g.size; ++peer) {
        if (peer == g.rank) continue;
        MPI_Request r = MPI_REQUEST_NULL;
        if (MPI_Isend(g.abort_out.c_str(), static_cast<int>(g.abort_out.size()) + 1, MPI_CHAR, peer,
                      kAbortTag, g.abort_comm, &r) == MPI_SUCCESS &&
            r != MPI_REQUEST_NULL)
          MPI_Request_free(&r);
      }
    }
  }
  EPX_LOG(Warn, Core, "group aborted: ", reason);
}

bool Group::aborted() const noexcept {
  Impl& g = *impl_;
  if (g.aborted.load(std::memory_order_acquire)) return true;
  std::string reason;
  {
    std::lock_guard<std::mutex> lock(g.mutex);
    if (g.aborted.load() || g.abort_recv == MPI_REQUEST_NULL) return g.aborted.load();
    const std::int64_t now = now_ns();
    if (now < g.next_poll_ns) return false;
    g.next_poll_ns = now + kPollNs;
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized) return false;
    int done = 0;
    MPI_Status status;
    if (MPI_Test(&g.abort_recv, &done, &status) != MPI_SUCCESS || !done) return false;
    std::uint64_t nonce = 0;
    std::memcpy(&nonce, g.abort_in, sizeof nonce);
    if (nonce != g.nonce) {  // for an older group that had this id: not ours
      g.post_abort_recv();
      return false;
    }
    g.abort_in[sizeof g.abort_in - 1] = '\0';
    reason =
        core::concat("rank ", status.MPI_SOURCE, " aborted the group: ", g.abort_in + sizeof nonce);
    g.abort_reason = reason;
    g.aborted.store(true, std::memory_order_release);
  }
  EPX_LOG(Warn, Core, "group aborted: ", reason);
  return true;
}

std::string Group::abort_reason() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->abort_reason;
}

std::string Group::tag() const { return tag_of(impl_->rank, impl_->size); }

}  // namespace epx
