// Normal-mode combine, the flat path (one node, or one rank per node; the
// hierarchical path is combine_hier.cpp). Each token's owner sums, in rank
// order with f32 accumulation, the rows that the ranks holding its experts
// computed for it.
//
// Where a row is read from depends on where y lives:
//  - pull: y lies in the sender's receive space (Buffer::combine_input, or the
//    dispatched x reused in place) and the owner can load from that peer: the
//    owner reads the row where it is, in the same pass as the sum (no copy).
//  - push: otherwise the rank puts the rows of each owner back into the
//    owner's block, one contiguous put per owner (rows of an owner are
//    contiguous and in its token order), and the owner sums from there.
//
// Rounds: request (block and y coordinates, input verdicts) -> payload and
// done (push pairs only) -> sum -> release (owners that pulled tell the y
// holders they are done).
#include <vector>

#include "comm/combine_call.hpp"
#include "comm/validate.hpp"
#include "core/check.hpp"
#include "kernels/reduce.hpp"

namespace epx::comm {

Tensor Buffer::combine_input(const Handle& handle, std::int64_t hidden, DType dtype) {
  Impl& I = *impl_;
  const char* op = "combine_input";
  check_handle(handle, I.id, I.group.size(), op);
  EPX_CHECK(dtype == DType::f32 || dtype == DType::bf16, InvalidArgument, op, ": dtype = ",
            dtype_name(dtype), ", expected f32 or bf16");
  EPX_CHECK(hidden > 0, InvalidArgument, op, ": hidden = ", hidden, ", expected > 0");
  const std::int64_t M = handle.num_recv_tokens();
  EPX_CHECK(hidden <= (std::int64_t{1} << 40) / std::max<std::int64_t>(M, 1), InvalidArgument, op,
            ": hidden = ", hidden, " for ", M, " rows is beyond any buffer");
  const std::size_t bytes = static_cast<std::size_t>(M * hidden) * dtype_size(dtype);
  if (auto block = I.arena.try_allocate(bytes))
    return Tensor::view(block->lease, block->ptr, {M, hidden}, dtype);
  return Tensor::empty({M, hidden}, dtype);  // full: combine then pushes
}

void fill_call_fields(Message& m, const CombineCall& c, const transport::Fabric& fabric, int peer) {
  CombineRequest& v = m.as<CombineRequest>();
  v.hidden = c.hidden;
  v.dtype = static_cast<std::int64_t>(c.y.dtype());
  v.handle = c.h ? static_cast<std::int64_t>(c.h->seq) : 0;
  v.partial_dtype = static_cast<std::int64_t>(c.partial_dtype);
  v.y_region = c.y_home ? c.y_home->region : -1;
  v.y_offset = c.y_home ? static_cast<std::int64_t>(c.y_home->offset) : 0;
  v.y_row = c.ok() ? c.h->recv_prefix[peer] : 0;
  v.can_load = fabric.caps(peer).load_store;
}

bool reads_peer_y(const transport::Fabric& fabric, const Message& in, int peer) {
  return in.as<CombineRequest>().y_region >= 0 && fabric.caps(peer).load_store;
}

bool peer_reads_y(const CombineCall& c, const Message& in) {
  return c.y_home.has_value() && in.as<CombineRequest>().can_load != 0;
}

const std::byte* peer_y(transport::Fabric& fabric, const Message& in, int peer) {
  return static_cast<const std::byte*>(fabric.to(peer).peer_ptr(
      peer, static_cast<transport::RegionId>(in.as<CombineRequest>().y_region),
      static_cast<std::size_t>(in.as<CombineRequest>().y_offset)));
}

void check_same_call(const std::vector<Message>& in, const CombineCall& c) {
  for (std::size_t r = 0; r < in.size(); ++r) {
    const CombineRequest& v = in[r].as<CombineRequest>();
    EPX_CHECK_AGREED(v.hidden == c.hidden && v.dtype == std::int64_t(c.y.dtype()), "combine: rank ",
                     r, " passes y of hidden ", v.hidden, " and dtype ", dtype_name(DType(v.dtype)),
                     ", this rank ", c.y.describe(), "; all ranks must agree");
    EPX_CHECK_AGREED(v.handle == static_cast<std::int64_t>(c.h->seq), "combine: rank ", r,
                     " passed the handle of dispatch #", v.handle,
                     " but this rank that of dispatch #", c.h->seq,
                     "; all ranks must pass the handles of the same dispatch");
    EPX_CHECK_AGREED(v.partial_dtype == std::int64_t(c.partial_dtype), "combine: rank ", r,
                     " passes options.partials_in_input_dtype = ",
                     v.partial_dtype != std::int64_t(DType::f32) ? "true" : "false", ", this rank ",
                     c.partial_dtype != DType::f32 ? "true" : "false", "; all ranks must agree");
  }
}

Tensor allocate_result(Buffer::Impl& I, const CombineCall& c) {
  const std::int64_t T = c.h->num_tokens;
  if (auto block = I.arena.try_allocate(static_cast<std::size_t>(T) * c.row_bytes))
    return Tensor::view(block->lease, block->ptr, {T, c.hidden}, c.y.dtype());
  return Tensor::empty({T, c.hidden}, c.y.dtype());
}

Tensor combine_flat(Buffer::Impl& I, const CombineCall& c, const core::Deadline& deadline) {
  const int R = I.group.size(), me = I.group.rank();
  const detail::HandleState* h = c.h;
  const std::size_t row_bytes = c.row_bytes;
  std::vector<Message> out(R, I.control.stamp());
  for (int r = 0; r < R; ++r) {
    fill_call_fields(out[r], c, I.fabric, r);
    out[r].as<CombineRequest>().back = c.ok() ? h->send_prefix[r] : 0;
  }
  // The block for pushed rows is sized for every row coming back; rows that
  // are pulled instead leave their part unused.
  const std::int64_t rows_back = c.ok() ? h->send_prefix[R] : 0;
  // Ranks must agree on y and on the dispatch; checked before any growth.
  Buffer::Impl::Reserved res =
      I.reserve(Round::Request, static_cast<std::size_t>(rows_back) * row_bytes, out, c.err,
                deadline, [&](const std::vector<Message>& in) { check_same_call(in, c); });
  // pulls_from[r]: this rank reads its tokens' rows in r's y. pulled_by[s]: s reads from this y.
  std::vector<char> pulls_from(R), pulled_by(R);
  for (int r = 0; r < R; ++r) {
    pulls_from[r] = reads_peer_y(I.fabric, res.in[r], r);
    pulled_by[r] = peer_reads_y(c, res.in[r]);
  }

  // Push: rows that came from rank s go back to it in one piece, unless s
  // pulls them. Only pushes need a done signal: a puller may read y as soon
  // as the holder's request arrived (y is final when a rank calls combine).
  const auto* src = static_cast<const std::byte*>(c.y.raw());
  for (int i = 1; i <= R; ++i) {
    const int s = (me + i) % R;
    if (pulled_by[s]) continue;
    const std::int64_t first = h->recv_prefix[s], n = h->recv_prefix[s + 1] - first;
    if (n > 0) {
      const Message& m = res.in[s];
      const std::size_t dst = static_cast<std::size_t>(m.block.offset) +
                              static_cast<std::size_t>(m.as<CombineRequest>().back) * row_bytes;
      I.fabric.put(s, src + first * row_bytes, static_cast<transport::RegionId>(m.block.region),
                   dst, static_cast<std::size_t>(n) * row_bytes);
    }
  }
  // Signals after all puts: the transfers to different owners overlap.
  for (int i = 1; i <= R; ++i)
    if (!pulled_by[(me + i) % R]) I.control.signal_done((me + i) % R);
  for (int i = 1; i <= R; ++i) {
    const int r = (me + R - i) % R;
    if (!pulls_from[r]) I.control.wait_done(r, deadline, "combine: its rows for this rank's tokens");
  }

  // Where row c of the rows sent to rank r (c-th token in send_tokens[r]) is now.
  std::vector<const std::byte*> row_base(R);
  for (int r = 0; r < R; ++r) {
    row_base[r] =
        pulls_from[r]
            ? peer_y(I.fabric, res.in[r], r) +
                  static_cast<std::size_t>(res.in[r].as<CombineRequest>().y_row) * row_bytes
            : res.block.ptr + static_cast<std::size_t>(h->send_prefix[r]) * row_bytes;
  }

  // Sum: token t adds, in rank order, the rows that ranks computed for it.
  const std::int64_t T = h->num_tokens, hidden = c.hidden;
  Tensor result = allocate_result(I, c);
  auto* dst = static_cast<std::byte*>(result.raw());
  std::vector<std::size_t> cursor(R, 0);
  std::vector<const void*> rows(R);
  for (std::int64_t t = 0; t < T; ++t) {
    int n = 0;
    for (int r = 0; r < R; ++r) {
      const auto& tokens = h->send_tokens[r];
      std::size_t& k = cursor[r];
      if (k < tokens.size() && tokens[k] == t) rows[n++] = row_base[r] + (k++) * row_bytes;
    }
    kernels::sum_rows(rows.data(), n, c.y.dtype(), hidden, dst + t * row_bytes);
  }

  // Nobody may return while a peer still reads its y.
  for (int r = 0; r < R; ++r)
    if (pulls_from[r]) I.control.signal(Round::Release, r);
  for (int s = 0; s < R; ++s)
    if (pulled_by[s]) I.control.wait(Round::Release, s, deadline);
  return result;
}

Tensor Buffer::combine(const Tensor& y, const Handle& handle, const CombineOptions& options) {
  Impl& I = *impl_;
  return I.guarded([&]() -> Tensor {
    I.control.begin(Op::Combine);
    const core::Deadline deadline = I.deadline();
    const char* op = "combine";
    CombineCall c{y};
    c.err = validation_error([&] {
      check_handle(handle, I.id, I.group.size(), op);
      c.h = handle.state().get();
      check_tensor(y, op, "y", {DType::f32, DType::bf16}, 2);
      check_dim(y, 0, c.h->num_recv(), op, "y", "rows received by the handle's dispatch");
      c.hidden = y.dim(1);
    });
    c.row_bytes = static_cast<std::size_t>(c.hidden) * dtype_size(y.dtype());
    c.partial_dtype = options.partials_in_input_dtype ? y.dtype() : DType::f32;
    if (c.ok()) c.y_home = I.arena.locate(y.raw(), y.nbytes());
    return I.topo.hierarchical() ? combine_hierarchical(I, c, deadline)
                                 : combine_flat(I, c, deadline);
  });
}

}  // namespace epx::comm
