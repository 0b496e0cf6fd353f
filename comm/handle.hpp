// What a dispatch leaves for combine and the cached dispatch.
#pragma once

#include <cstdint>
#include <vector>

#include <epx/comm.hpp>

namespace epx::comm::detail {

struct HandleState {
  std::uint64_t buffer_id = 0;  // the Buffer that made it
  std::uint64_t seq = 0;        // the call number of that dispatch
  int num_ranks = 0;
  std::int64_t num_tokens = 0;  // T: tokens this rank sent
  std::int64_t hidden = 0;      // H of the dispatch
  // Send side: per destination rank, the source token indices, ascending.
  std::vector<std::vector<std::int32_t>> send_tokens;
  std::vector<std::int64_t> send_prefix;  // [R+1]: row offset of each rank's rows, in rank order
  // Receive side: rows [recv_prefix[s], recv_prefix[s+1]) came from rank s.
  std::vector<std::int64_t> recv_prefix;  // [R+1]
  std::vector<int> num_recv_tokens_per_expert;
  std::int64_t num_recv() const { return recv_prefix.empty() ? 0 : recv_prefix.back(); }

  // Hierarchical mode only (NodeTopology::hierarchical()).
  // Send side: per node, the tokens sent to it, ascending (empty for this
  // rank's own node, whose ranks get their rows directly).
  std::vector<std::vector<std::int32_t>> node_tokens;
  // Forwarder side: for each remote rank of this rank's local index (its
  // tokens cross to this node through this rank), which ranks of this node
  // each of its batch rows went to.
  struct Route {
    int source = 0;
    std::vector<std::int32_t> row_ptr;  // [B+1]: row i went to locals[row_ptr[i] .. row_ptr[i+1])
    std::vector<std::int32_t> locals;   // local indices, ascending per row
    std::vector<std::int64_t> per_local;  // [local size]: batch rows that went to each local rank
    std::int64_t rows() const { return static_cast<std::int64_t>(row_ptr.size()) - 1; }
  };
  std::vector<Route> routes;  // in NodeTopology::forwarded_sources() order
};

}  // namespace epx::comm::detail

namespace epx::comm {
struct PendingLowLatencyDispatch;
using Route = detail::HandleState::Route;
}

namespace epx::comm::detail {

// What a low-latency dispatch leaves for its combine.
struct LowLatencyHandleState {
  std::uint64_t buffer_id = 0;
  std::uint64_t call = 0;  // the dispatch's number among low-latency dispatches
  int half = 0;
  std::int64_t tokens = 0, topk = 0;
  std::uint64_t topk_fingerprint = 0;
  // Token owner side: the slot of (t, k) in its expert's rows from this rank, or -1.
  std::vector<std::int32_t> slot;  // [T*K]
  // Expert side: the dispatch's arrival and compaction (its hook), which
  // tells which rows of each local expert came from which rank.
  std::shared_ptr<PendingLowLatencyDispatch> pending;
};

}  // namespace epx::comm::detail
