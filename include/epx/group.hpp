// epx::Group: an MPI communicator plus its node topology. A node is a set of
// ranks that share memory: by default what MPI_Comm_split_type(SHARED) says;
// ranks_per_node > 0 (or EPX_RANKS_PER_NODE) splits hosts into "virtual
// nodes" of consecutive ranks, so inter-node paths run on one machine.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <mpi.h>

#include <epx/config.hpp>

namespace epx {

// A Group is a handle: copies share one communicator and one failure state
// (a Buffer keeps a copy, so the caller's Group may move or go away).
class EPX_API Group {
 public:
  // Collective over `comm`. ranks_per_node: 0 = EPX_RANKS_PER_NODE if set,
  // else the shared-memory split. A virtual node never spans two hosts.
  explicit Group(MPI_Comm comm, int ranks_per_node = 0);
  ~Group();
  Group(const Group&);
  Group& operator=(const Group&);

  int rank() const noexcept;
  int size() const noexcept;
  int node() const noexcept;        // this rank's node index, 0..num_nodes-1
  int num_nodes() const noexcept;
  int local_rank() const noexcept;  // index inside the node
  int local_size() const noexcept;
  int node_of(int rank) const;      // node index of any rank of the group
  const std::vector<int>& node_ranks() const noexcept;  // group ranks of this node, ascending

  MPI_Comm comm() const noexcept;       // epx's private duplicate of the caller's communicator
  MPI_Comm node_comm() const noexcept;  // the ranks of this node

  // Collective: a new Group over the ranks of equal colour (>= 0), ordered by
  // key (MPI_Comm_split), keeping this group's ranks_per_node rule.
  Group split(int color, int key) const;

  // Marks the group failed, here and on every rank of it (the reason is sent
  // to each peer without waiting; the first reason a rank sees stays). The
  // one failure channel of epx: comm Buffers, the pipeline Executor and the
  // balancer's collectives on this group (or a copy of it) abort it when
  // they fail on one rank, and every later or ongoing epx wait on it, on any
  // rank, fails fast with PeerFailure. Not collective; any rank may call it.
  void abort(const std::string& reason);
  // Whether this rank's group was aborted, by itself or a peer (a peer's
  // reason reads "rank p aborted the group: ..."). Polls, never waits.
  bool aborted() const noexcept;
  std::string abort_reason() const;

  // "[rank 3/8]", the prefix of every epx message about this group.
  std::string tag() const;

  struct Impl;  // opaque

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace epx
