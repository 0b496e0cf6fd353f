#include <epx/group.hpp>

#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>

#include "core/check.hpp"
#include "core/config.hpp"
#include "core/log.hpp"

namespace epx {

struct Group::Impl {
  MPI_Comm comm = MPI_COMM_NULL;
  MPI_Comm node_comm = MPI_COMM_NULL;
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
  {
    std::lock_guard<std::mutex> lock(impl_->mutex);
    if (impl_->aborted.load()) return;  // the first reason stays
    impl_->abort_reason = reason;
    impl_->aborted.store(true, std::memory_order_release);
  }
  EPX_LOG(Warn, Core, "group aborted: ", reason);
}

bool Group::aborted() const noexcept { return impl_->aborted.load(std::memory_order_acquire); }

std::string Group::abort_reason() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->abort_reason;
}

std::string Group::tag() const { return tag_of(impl_->rank, impl_->size); }

}  // namespace epx
