// The hierarchical normal dispatch (several nodes of several ranks): a token
// crosses to a remote node once, in one batch per (sender, node) sent to the
// rank of the sender's local index there, which forwards each row to the
// ranks of its node that hold the token's experts. Rows end where the flat
// path puts them: receivers cannot tell the two apart.
#pragma once

#include <cstdint>
#include <vector>

#include "comm/arena.hpp"
#include "comm/buffer_impl.hpp"
#include "comm/dispatch_rows.hpp"
#include "comm/handle.hpp"

namespace epx::comm {

// Per node, the tokens this rank sends to it (ascending); empty for its own node.
std::vector<std::vector<std::int32_t>> tokens_per_node(
    const NodeTopology& topo, int me, const std::vector<std::vector<std::int32_t>>& send_tokens,
    std::int64_t num_tokens);

// Runs the reply, payload and done rounds. Where forwarded rows go: a normal
// dispatch computes it from the batches' top-k ids into `computed` (kept in
// its handle); the cached dispatch, whose batches carry no top-k, reads
// `given` (the handle's).
Arena::Block run_dispatch_hierarchical(Buffer::Impl& I, const Plan& p,
                                       const std::vector<std::vector<std::int32_t>>& send_tokens,
                                       const std::vector<std::vector<std::int32_t>>& node_tokens,
                                       const std::vector<Message>& requests, const RowSource& src,
                                       const std::vector<std::int64_t>& recv_prefix,
                                       const std::vector<Route>* given, std::vector<Route>* computed,
                                       const core::Deadline& deadline);

}  // namespace epx::comm
