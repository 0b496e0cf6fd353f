#include "comm/topology.hpp"

namespace epx::comm {

NodeTopology::NodeTopology(const Group& g) : nodes_(g.num_nodes()) {
  const int R = g.size();
  node_of_.resize(R);
  local_of_.resize(R);
  std::vector<std::vector<int>> members(static_cast<std::size_t>(nodes_));
  for (int r = 0; r < R; ++r) {
    node_of_[r] = g.node_of(r);
    local_of_[r] = static_cast<int>(members[node_of_[r]].size());
    members[node_of_[r]].push_back(r);
  }
  per_node_ = static_cast<int>(members[0].size());
  for (const auto& m : members) equal_ = equal_ && static_cast<int>(m.size()) == per_node_;
  if (!equal_) return;  // the Buffer refuses this shape; rank_at() is never used
  for (const auto& m : members) ranks_.insert(ranks_.end(), m.begin(), m.end());
}

std::vector<int> NodeTopology::forwarded_sources(int f) const {
  const int node = node_of(f), local = local_of(f);
  std::vector<int> sources;
  for (int i = 1; i < nodes_; ++i) sources.push_back(rank_at((node + nodes_ - i) % nodes_, local));
  return sources;
}

}  // namespace epx::comm
