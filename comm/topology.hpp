// The node shape as the protocol sees it: which rank sits where, and who
// forwards a token to a remote node. Ranks of one node need not be
// consecutive (a physical split may interleave them); every node has the
// same number of ranks (checked when the Buffer is built).
#pragma once

#include <vector>

#include <epx/group.hpp>

namespace epx::comm {

class NodeTopology {
 public:
  explicit NodeTopology(const Group& g);

  int nodes() const noexcept { return nodes_; }
  int per_node() const noexcept { return per_node_; }
  int node_of(int rank) const { return node_of_[rank]; }
  int local_of(int rank) const { return local_of_[rank]; }
  int rank_at(int node, int local) const { return ranks_[node * per_node_ + local]; }
  bool equal_nodes() const noexcept { return equal_; }

  // Hierarchical normal mode: a token crosses to a remote node once, to the
  // rank of its own local index there, which forwards it inside that node.
  // With one node there is nothing to cross; with one rank per node the
  // forwarder is the destination itself, so the flat path is the same traffic.
  bool hierarchical() const noexcept { return nodes_ > 1 && per_node_ > 1; }
  // The rank of `node` that forwards `source`'s tokens (same local index).
  int forwarder(int source, int node) const { return rank_at(node, local_of(source)); }
  // The remote ranks whose tokens `f` forwards (its local index on the other
  // nodes), in the order it handles them: a sender sends to the next node
  // first, so the rank of the previous node comes first.
  std::vector<int> forwarded_sources(int f) const;

 private:
  int nodes_ = 1, per_node_ = 1;
  bool equal_ = true;
  std::vector<int> node_of_, local_of_, ranks_;
};

}  // namespace epx::comm
