// Normal-mode combine across nodes of several ranks. A token's rows are
// reduced inside each node first and cross back once per node:
//  1. every rank sends the rows it holds for an owner of its own node back to
//     that owner (or the owner reads them in place, as on the flat path), and
//     the rows for an owner on another node to the rank of this node that
//     forwarded that owner's tokens here (same local index as the owner);
//  2. that forwarder sums each token's rows over the ranks of its node, in
//     rank order from +0 in f32 (the partial P_n), and puts the partials of
//     one owner back to it in one piece: f32, or y's dtype on request;
//  3. the owner sums, per token, P_n over the nodes in ascending order
//     (its own node's P from the rows of step 1), from +0 in f32, rounded to
//     y's dtype once. Same inputs, same bits, whatever the timing.
//
// When a holder's y lies in its receive space and the others of its node can
// load from there, nothing is copied inside the node: owners read their rows
// in place (as on the flat path) and so do forwarders, which learn where each
// forwarded source's rows start in the holder's y from the holder's node list
// (Control::send_node_list: one int64 per other node, for any node count).
//
// Rounds: request (block areas, y coordinates, verdicts) -> rows to owners
// and forwarders + done inside the node -> partials + done across nodes ->
// sum -> release (ranks that read in place tell the holders).
#include <vector>

#include "comm/combine_call.hpp"
#include "core/check.hpp"
#include "kernels/reduce.hpp"

namespace epx::comm {

Tensor combine_hierarchical(Buffer::Impl& I, const CombineCall& c, const core::Deadline& deadline) {
  const NodeTopology& topo = I.topo;
  const int R = I.group.size(), me = I.group.rank();
  const int N = topo.nodes(), L = topo.per_node(), node = topo.node_of(me), local = topo.local_of(me);
  const detail::HandleState* h = c.h;
  const std::size_t rb = c.row_bytes;
  const std::size_t pb = static_cast<std::size_t>(c.hidden) * dtype_size(c.partial_dtype);
  auto rank_in_node = [&](int l) { return topo.rank_at(node, l); };

  // This rank's block: rows back from the ranks of its node (for its own
  // tokens), partials from the other nodes, and the rows it forwards, by holder.
  std::vector<std::size_t> back_at(R, 0), forward_at(R, 0), partial_at(N, 0);
  std::size_t need = 0;
  if (c.ok()) {
    for (int l = 0; l < L; ++l) {
      back_at[rank_in_node(l)] = need;
      need += h->send_tokens[rank_in_node(l)].size() * rb;
    }
    for (int n = 0; n < N; ++n) {
      if (n == node) continue;
      partial_at[n] = need;
      need += h->node_tokens[n].size() * pb;
    }
    for (int l = 0; l < L; ++l) {
      forward_at[rank_in_node(l)] = need;
      for (const Route& r : h->routes) need += static_cast<std::size_t>(r.per_local[l]) * rb;
    }
  }
  std::vector<Message> out(R, I.control.stamp());
  for (int r = 0; r < R; ++r) {
    CombineRequest& v = out[r].as<CombineRequest>();
    fill_call_fields(out[r], c, I.fabric, r);
    if (topo.node_of(r) == node) {
      v.back = static_cast<std::int64_t>(back_at[r]);
      v.forward = static_cast<std::int64_t>(forward_at[r]);
      // Where the rows of each source that r forwarded here start in this y,
      // for r to read them in place: it arrives with this request.
      if (c.ok()) {
        std::vector<std::int64_t> first_rows;
        for (int src : topo.forwarded_sources(r)) first_rows.push_back(h->recv_prefix[src]);
        I.control.send_node_list(r, first_rows);
      }
    } else if (topo.local_of(r) == local) {
      v.partials = static_cast<std::int64_t>(partial_at[topo.node_of(r)]);
    }
  }
  Buffer::Impl::Reserved res = I.reserve(Round::Request, need, out, c.err, deadline,
                                         [&](const std::vector<Message>& in) { check_same_call(in, c); });
  auto region = [&](int r) { return static_cast<transport::RegionId>(res.in[r].block.region); };
  // Byte `field` of r's request, in r's block.
  auto at = [&](int r, std::int64_t CombineRequest::*field) {
    return static_cast<std::size_t>(res.in[r].block.offset + res.in[r].as<CombineRequest>().*field);
  };

  // Inside the node: owners and forwarders read a holder's rows in place when
  // they are in its receive space and they can load from there.
  std::vector<char> pulls_from(R), pulled_by(R);
  for (int l = 0; l < L; ++l) {
    const int d = rank_in_node(l);
    pulls_from[d] = reads_peer_y(I.fabric, res.in[d], d);
    pulled_by[d] = peer_reads_y(c, res.in[d]);
  }
  // Where holder d's y starts, for those read in place, and where each
  // source's rows that this rank forwarded start there (d's node list).
  std::vector<const std::byte*> y_of(R, nullptr);
  std::vector<const std::int64_t*> source_rows_of(R, nullptr);
  for (int l = 0; l < L; ++l) {
    const int d = rank_in_node(l);
    if (!pulls_from[d]) continue;
    y_of[d] = peer_y(I.fabric, res.in[d], d);
    source_rows_of[d] = I.control.node_list(d);
  }
  const auto* y = static_cast<const std::byte*>(c.y.raw());
  auto rows_from = [&](int s) {
    return static_cast<std::size_t>(h->recv_prefix[s + 1] - h->recv_prefix[s]);
  };

  // 1. Rows for the owners of this node, and for the forwarders of the others'.
  for (int i = 1; i <= L; ++i) {
    const int d = rank_in_node((local + i) % L);
    if (pulled_by[d]) continue;  // d reads them in place
    if (rows_from(d))
      I.fabric.put(d, y + h->recv_prefix[d] * rb, region(d), at(d, &CombineRequest::back),
                   rows_from(d) * rb);
    std::size_t to = at(d, &CombineRequest::forward);
    for (int s : topo.forwarded_sources(d)) {
      if (rows_from(s)) I.fabric.put(d, y + h->recv_prefix[s] * rb, region(d), to, rows_from(s) * rb);
      to += rows_from(s) * rb;
    }
  }
  for (int i = 1; i <= L; ++i) I.control.signal_done(rank_in_node((local + i) % L));
  for (int i = 1; i <= L; ++i)
    I.control.wait_done(rank_in_node((local + L - i) % L), deadline,
                        "combine: rows of this node's holders, to sum or forward");

  // 2. Partials of the tokens this rank forwarded, one put per owner.
  // One scratch for all owners: every put is issued before the first signal.
  thread_local std::vector<std::byte> partials;
  std::size_t partial_rows = 0;
  for (const Route& r : h->routes) partial_rows += static_cast<std::size_t>(r.rows());
  if (partials.size() < partial_rows * pb) partials.resize(partial_rows * pb);
  std::byte* scratch = partials.data();
  std::vector<const void*> rows(static_cast<std::size_t>(L));
  const std::vector<DType> y_dtypes(static_cast<std::size_t>(L), c.y.dtype());
  // The next row from each holder: in its y (read in place), else in this block.
  std::vector<const std::byte*> next(static_cast<std::size_t>(L));
  std::vector<const std::byte*> pushed(static_cast<std::size_t>(L));
  for (int l = 0; l < L; ++l) pushed[l] = res.block.ptr + forward_at[rank_in_node(l)];
  for (std::size_t ri = 0; ri < h->routes.size(); ++ri) {
    const Route& r = h->routes[ri];
    for (int l = 0; l < L; ++l) {
      const int d = rank_in_node(l);
      next[l] = pulls_from[d] ? y_of[d] + source_rows_of[d][ri] * static_cast<std::int64_t>(rb)
                              : pushed[l];
      pushed[l] += static_cast<std::size_t>(r.per_local[l]) * rb;
    }
    const std::size_t B = static_cast<std::size_t>(r.rows());
    for (std::size_t i = 0; i < B; ++i) {
      int n = 0;
      for (std::int32_t j = r.row_ptr[i]; j < r.row_ptr[i + 1]; ++j) {
        const int l = r.locals[j];
        rows[n++] = next[l];
        next[l] += rb;
      }
      kernels::sum_rows_mixed(rows.data(), y_dtypes.data(), n, c.hidden, c.partial_dtype,
                              scratch + i * pb);
    }
    if (B)
      I.fabric.put(r.source, scratch, region(r.source), at(r.source, &CombineRequest::partials),
                   B * pb);
    scratch += B * pb;
  }
  for (const Route& r : h->routes) I.control.signal_done(r.source);
  for (int i = 1; i < N; ++i)
    I.control.wait_done(topo.rank_at((node + i) % N, local), deadline,
                        "combine: the partial sums of its node for this rank's tokens");

  // 3. The sum over nodes, per token.
  std::vector<const std::byte*> row_base(R, nullptr);
  for (int l = 0; l < L; ++l) {
    const int d = rank_in_node(l);
    row_base[d] = pulls_from[d] ? y_of[d] + res.in[d].as<CombineRequest>().y_row *
                                                static_cast<std::int64_t>(rb)
                                : res.block.ptr + back_at[d];
  }
  const std::int64_t T = h->num_tokens;
  Tensor result = allocate_result(I, c);
  auto* dst = static_cast<std::byte*>(result.raw());
  thread_local std::vector<float> own;  // this node's partial, f32
  own.resize(static_cast<std::size_t>(c.hidden));
  std::vector<std::size_t> row_cursor(static_cast<std::size_t>(L), 0), node_cursor(N, 0);
  std::vector<const void*> parts(static_cast<std::size_t>(N));
  std::vector<DType> part_dtypes(static_cast<std::size_t>(N));
  for (std::int64_t t = 0; t < T; ++t) {
    int n_own = 0, n_parts = 0;
    bool remote = false;
    for (int l = 0; l < L; ++l) {
      const auto& tokens = h->send_tokens[rank_in_node(l)];
      std::size_t& k = row_cursor[l];
      if (k < tokens.size() && tokens[k] == t) rows[n_own++] = row_base[rank_in_node(l)] + (k++) * rb;
    }
    for (int n = 0; n < N; ++n) {
      if (n == node) {
        if (n_own) parts[n_parts] = own.data(), part_dtypes[n_parts++] = DType::f32;
        continue;
      }
      const auto& tokens = h->node_tokens[n];
      std::size_t& k = node_cursor[n];
      if (k < tokens.size() && tokens[k] == t) {
        parts[n_parts] = res.block.ptr + partial_at[n] + (k++) * pb;
        part_dtypes[n_parts++] = c.partial_dtype;
        remote = true;
      }
    }
    std::byte* out_row = dst + t * rb;
    if (!remote) {
      // Only this node: 0 + P rounds like P, so sum the rows straight into the result.
      kernels::sum_rows_mixed(rows.data(), y_dtypes.data(), n_own, c.hidden, c.y.dtype(), out_row);
      continue;
    }
    if (n_own)
      kernels::sum_rows_mixed(rows.data(), y_dtypes.data(), n_own, c.hidden, DType::f32, own.data());
    kernels::sum_rows_mixed(parts.data(), part_dtypes.data(), n_parts, c.hidden, c.y.dtype(), out_row);
  }

  // Nobody may return while a peer still reads its y.
  for (int l = 0; l < L; ++l)
    if (pulls_from[rank_in_node(l)]) I.control.signal(Round::Release, rank_in_node(l));
  for (int l = 0; l < L; ++l)
    if (pulled_by[rank_in_node(l)]) I.control.wait(Round::Release, rank_in_node(l), deadline);
  return result;
}

}  // namespace epx::comm
