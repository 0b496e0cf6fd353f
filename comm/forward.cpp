#include "comm/forward.hpp"

#include <algorithm>

#include "core/check.hpp"

namespace epx::comm {

namespace {

// Sends this rank's batch for node `dst_node` to its forwarder `f`: the
// header (where each rank of that node wants this rank's rows), then the rows
// with global top-k ids.
void send_batch(Buffer::Impl& I, const Plan& p, int dst_node, int f,
                const std::vector<Message>& replies, const std::vector<std::int32_t>& tokens,
                const RowSource& src) {
  if (tokens.empty()) return;
  const int L = I.topo.per_node();
  const BatchLayout B(static_cast<std::int64_t>(tokens.size()), L, p);
  const auto region = static_cast<transport::RegionId>(replies[f].block.region);
  const std::size_t at =
      static_cast<std::size_t>(replies[f].block.offset + replies[f].as<DispatchReply>().batch_at);
  std::vector<BatchHeaderEntry> header(static_cast<std::size_t>(L));
  for (int l = 0; l < L; ++l) {
    const Message& m = replies[I.topo.rank_at(dst_node, l)];
    const DispatchReply& r = m.as<DispatchReply>();
    header[l] = {m.block.region, m.block.offset, r.first_row, r.rows};
  }
  Target t{f, region, at, 0, static_cast<std::int64_t>(tokens.size()), B.header};
  write_rows(I.fabric, t, p, tokens.data(), tokens.size(), src, -1, header.data(),
             header.size() * sizeof(BatchHeaderEntry));
}

// Which ranks of this node each batch row goes to: those holding one of
// its experts, by local index.
Route route_batch(const NodeTopology& topo, int me, int source, std::int64_t rows,
                  const std::int64_t* topk_idx, const Plan& p, int ranks) {
  const int node = topo.node_of(me), L = topo.per_node();
  const std::int64_t per_rank = p.experts / ranks;
  Route r;
  r.source = source;
  r.per_local.assign(static_cast<std::size_t>(L), 0);
  r.row_ptr.reserve(static_cast<std::size_t>(rows) + 1);
  r.row_ptr.push_back(0);
  std::vector<char> hit(static_cast<std::size_t>(L));
  for (std::int64_t i = 0; i < rows; ++i) {
    std::fill(hit.begin(), hit.end(), 0);
    for (std::int64_t k = 0; k < p.topk; ++k) {
      const std::int64_t e = topk_idx[i * p.topk + k];
      if (e < 0) continue;
      const int rank = static_cast<int>(e / per_rank);
      if (topo.node_of(rank) == node) hit[static_cast<std::size_t>(topo.local_of(rank))] = 1;
    }
    for (int l = 0; l < L; ++l)
      if (hit[l]) r.locals.push_back(l), ++r.per_local[l];
    r.row_ptr.push_back(static_cast<std::int32_t>(r.locals.size()));
  }
  return r;
}

// Writes the rows of one received batch to the ranks of this node.
void forward_batch(Buffer::Impl& I, const Plan& p, const std::byte* batch, const Route& route,
                   bool with_topk) {
  const int L = I.topo.per_node(), me = I.group.rank(), node = I.topo.node_of(me);
  const BatchLayout B(route.rows(), L, p);
  const auto* h = reinterpret_cast<const BatchHeaderEntry*>(batch);
  const std::byte* rows = batch + B.header;
  RowSource src;
  src.x = rows + B.rows.x;
  if (p.num_scales) src.scales = reinterpret_cast<const float*>(rows + B.rows.scales);
  src.with_topk = with_topk;
  if (with_topk) {
    src.topk_idx = reinterpret_cast<const std::int64_t*>(rows + B.rows.topk_idx);
    src.topk_weights = reinterpret_cast<const float*>(rows + B.rows.topk_weights);
  }
  std::vector<std::vector<std::int32_t>> rows_to(static_cast<std::size_t>(L));
  for (std::int64_t i = 0; i < route.rows(); ++i)
    for (std::int32_t j = route.row_ptr[i]; j < route.row_ptr[i + 1]; ++j)
      rows_to[route.locals[j]].push_back(static_cast<std::int32_t>(i));
  for (int i = 1; i <= L; ++i) {
    const int l = (I.topo.local_of(me) + i) % L;
    if (rows_to[l].empty()) continue;
    const int d = I.topo.rank_at(node, l);
    const Target t{d, static_cast<transport::RegionId>(h[l].region),
                   static_cast<std::size_t>(h[l].offset), h[l].first_row, h[l].rows};
    write_rows(I.fabric, t, p, rows_to[l].data(), rows_to[l].size(), src, d);
  }
}

}  // namespace

std::vector<std::vector<std::int32_t>> tokens_per_node(
    const NodeTopology& topo, int me, const std::vector<std::vector<std::int32_t>>& send_tokens,
    std::int64_t num_tokens) {
  const int N = topo.nodes(), R = static_cast<int>(send_tokens.size());
  std::vector<std::vector<std::int32_t>> out(static_cast<std::size_t>(N));
  std::vector<std::int32_t> last(static_cast<std::size_t>(N), -1);
  // Merge the per-rank lists: a token goes to a node once, however many of its ranks want it.
  std::vector<char> hit(static_cast<std::size_t>(num_tokens));
  for (int n = 0; n < N; ++n) {
    if (n == topo.node_of(me)) continue;
    std::fill(hit.begin(), hit.end(), 0);
    for (int r = 0; r < R; ++r)
      if (topo.node_of(r) == n)
        for (std::int32_t t : send_tokens[r]) hit[static_cast<std::size_t>(t)] = 1;
    for (std::int64_t t = 0; t < num_tokens; ++t)
      if (hit[static_cast<std::size_t>(t)]) out[n].push_back(static_cast<std::int32_t>(t));
  }
  return out;
}

Arena::Block run_dispatch_hierarchical(Buffer::Impl& I, const Plan& p,
                                       const std::vector<std::vector<std::int32_t>>& send_tokens,
                                       const std::vector<std::vector<std::int32_t>>& node_tokens,
                                       const std::vector<Message>& requests, const RowSource& src,
                                       const std::vector<std::int64_t>& recv_prefix,
                                       const std::vector<Route>* given, std::vector<Route>* computed,
                                       const core::Deadline& deadline) {
  const NodeTopology& topo = I.topo;
  const int R = I.group.size(), me = I.group.rank();
  const int N = topo.nodes(), L = topo.per_node(), node = topo.node_of(me), local = topo.local_of(me);
  const std::int64_t M = recv_prefix[R];

  // The block: the received rows, then one batch area per forwarded source.
  const std::vector<int> sources = topo.forwarded_sources(me);
  std::vector<std::size_t> batch_at(static_cast<std::size_t>(R), 0);
  std::size_t need = PayloadLayout(M, p.row_bytes, p.num_scales, p.topk).total;
  for (int s : sources) {
    batch_at[s] = need;
    need += BatchLayout(requests[s].as<DispatchRequest>().batch_rows, L, p).total;
  }
  std::vector<Message> replies = reply_messages(I.control, recv_prefix);
  for (int s = 0; s < R; ++s)
    replies[s].as<DispatchReply>().batch_at = static_cast<std::int64_t>(batch_at[s]);
  Buffer::Impl::Reserved res = I.reserve(Round::Reply, need, replies, "", deadline);

  // 1. One batch per remote node, first: the slow links start working at
  // once, all of them before any signal waits for one to complete.
  for (int i = 1; i < N; ++i) {
    const int n = (node + i) % N;
    send_batch(I, p, n, topo.rank_at(n, local), res.in, node_tokens[n], src);
  }
  for (int i = 1; i < N; ++i) I.control.signal_done(topo.rank_at((node + i) % N, local));
  // 2. Rows for the ranks of this node, written straight into their blocks.
  for (int i = 1; i <= L; ++i) {
    const int d = topo.rank_at(node, (local + i) % L);
    write_rows(I.fabric, target_of(d, res.in[d]), p, send_tokens[d].data(), send_tokens[d].size(),
               src, d);
  }
  // 3. Forward the batches of the remote ranks of this local index.
  EPX_CHECK(src.with_topk == (computed != nullptr) && (given || computed), Internal,
            "dispatch: routes must be computed exactly when the batches carry top-k ids");
  // Routes stay in `sources` order whatever the arrival order: combine's
  // holders lay out the rows they send a forwarder in that order.
  if (computed) computed->assign(sources.size(), Route{});
  const std::vector<Route>& routes = computed ? *computed : *given;
  EPX_CHECK(routes.size() == sources.size(), Internal, "dispatch: ", routes.size(),
            " routes for ", sources.size(), " forwarded ranks");
  // Batches are forwarded as they come: one that is late holds up no other.
  std::vector<std::size_t> pending(sources.size());
  for (std::size_t j = 0; j < pending.size(); ++j) pending[j] = j;
  while (!pending.empty()) {
    auto next = std::find_if(pending.begin(), pending.end(), [&](std::size_t j) {
      return I.control.arrived(Round::Done, sources[j]);
    });
    if (next == pending.end()) {
      next = pending.begin();  // none yet: wait (bounded, named) for the one expected first
      I.control.wait_done(sources[*next], deadline, "forward: its batch for this node");
    }
    const std::size_t j = *next;
    pending.erase(next);
    const int s = sources[j];
    const std::byte* batch = res.block.ptr + batch_at[s];
    const std::int64_t rows = requests[s].as<DispatchRequest>().batch_rows;
    if (computed) {
      const BatchLayout B(rows, L, p);
      (*computed)[j] = route_batch(
          topo, me, s, rows,
          reinterpret_cast<const std::int64_t*>(batch + B.header + B.rows.topk_idx), p, R);
    }
    EPX_CHECK(routes[j].source == s && routes[j].rows() == rows, Internal, "dispatch: no route of ",
              rows, " rows for the batch of rank ", s);
    forward_batch(I, p, batch, routes[j], src.with_topk);
  }
  // 4. This rank's rows for each rank of the node are all written.
  for (int i = 1; i <= L; ++i) I.control.signal_done(topo.rank_at(node, (local + i) % L));
  for (int i = 1; i <= L; ++i)
    I.control.wait_done(topo.rank_at(node, (local + L - i) % L), deadline,
                        "receive: its rows and the rows it forwards to this rank");
  return std::move(res.block);
}

}  // namespace epx::comm
