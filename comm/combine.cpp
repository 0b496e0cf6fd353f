// Normal-mode combine: each rank sends the expert outputs of its received rows
// back to their source ranks (one contiguous put per source, since the rows of
// a source are contiguous and in its token order); the source sums them in
// rank order with f32 accumulation.
//
// Rounds: request (where each rank's rows go, input verdicts) -> payload -> done.
#include <vector>

#include "comm/buffer_impl.hpp"
#include "comm/validate.hpp"
#include "core/check.hpp"
#include "kernels/quant.hpp"

namespace epx::comm {

namespace {
constexpr int kReqFirstRow = 3;  // where the receiver's rows start in the sender's block
constexpr int kReqHidden = 4;
constexpr int kReqDtype = 5;
constexpr int kReqHandle = 6;
}  // namespace

Tensor Buffer::combine(const Tensor& y, const Handle& handle) {
  Impl& I = *impl_;
  I.control.begin(Op::Combine);
  const core::Deadline deadline = I.deadline();
  const int R = I.group.size(), me = I.group.rank();
  const char* op = "combine";

  const detail::HandleState* h = nullptr;
  std::int64_t hidden = 0;
  const std::string err = validation_error([&] {
    check_handle(handle, I.id, R, op);
    h = handle.state().get();
    check_tensor(y, op, "y", {DType::f32, DType::bf16}, 2);
    check_dim(y, 0, h->num_recv(), op, "y", "rows received by the handle's dispatch");
    hidden = y.dim(1);
  });
  const std::size_t row_bytes = static_cast<std::size_t>(hidden) * dtype_size(y.dtype());
  const std::int64_t rows_back = h && err.empty() ? h->send_prefix[R] : 0;

  std::vector<Message> out(R, I.control.stamp());
  for (int r = 0; r < R; ++r) {
    out[r].v[kReqFirstRow] = h && err.empty() ? h->send_prefix[r] : 0;
    out[r].v[kReqHidden] = hidden;
    out[r].v[kReqDtype] = static_cast<std::int64_t>(y.dtype());
    out[r].v[kReqHandle] = h ? static_cast<std::int64_t>(h->seq) : 0;
  }
  Buffer::Impl::Reserved res =
      I.reserve(Round::Request, static_cast<std::size_t>(rows_back) * row_bytes, out, err, deadline);
  for (int r = 0; r < R; ++r) {
    const std::int64_t* v = res.in[r].v;
    EPX_CHECK(v[kReqHidden] == hidden && v[kReqDtype] == std::int64_t(y.dtype()), InvalidArgument,
              op, ": rank ", r, " passes y of hidden ", v[kReqHidden], " and dtype ",
              dtype_name(DType(v[kReqDtype])), ", this rank ", y.describe(), "; all ranks must agree");
    EPX_CHECK(v[kReqHandle] == static_cast<std::int64_t>(h->seq), InvalidArgument, op, ": rank ", r,
              " passed the handle of dispatch #", v[kReqHandle], " but this rank that of dispatch #",
              h->seq, "; all ranks must pass the handles of the same dispatch");
  }

  // Payload: rows that came from rank s go back to it, in one piece.
  const auto* src = static_cast<const std::byte*>(y.raw());
  for (int i = 1; i <= R; ++i) {
    const int s = (me + i) % R;
    const std::int64_t first = h->recv_prefix[s], n = h->recv_prefix[s + 1] - first;
    if (n > 0) {
      const std::size_t dst = static_cast<std::size_t>(res.in[s].v[kMsgOffset]) +
                              static_cast<std::size_t>(res.in[s].v[kReqFirstRow]) * row_bytes;
      I.fabric.to(s).put(s, src + first * row_bytes, static_cast<transport::RegionId>(res.in[s].v[kMsgRegion]),
                         dst, static_cast<std::size_t>(n) * row_bytes);
    }
    I.control.signal_done(s);
  }
  for (int i = 1; i <= R; ++i) I.control.wait_done((me + R - i) % R, deadline);

  // Reduce: token t sums, in rank order, the rows that ranks sent back for it.
  const std::int64_t T = h->num_tokens;
  Tensor result = Tensor::empty({T, hidden}, y.dtype());
  auto* dst = static_cast<std::byte*>(result.raw());
  const std::byte* back = res.block.ptr;
  std::vector<float> acc(static_cast<std::size_t>(hidden));
  std::vector<std::size_t> cursor(R, 0);
  for (std::int64_t t = 0; t < T; ++t) {
    std::fill(acc.begin(), acc.end(), 0.0f);
    for (int r = 0; r < R; ++r) {
      const auto& tokens = h->send_tokens[r];
      std::size_t& c = cursor[r];
      if (c < tokens.size() && tokens[c] == t) {
        const std::int64_t row = h->send_prefix[r] + static_cast<std::int64_t>(c);
        kernels::accumulate_row(back + row * row_bytes, y.dtype(), hidden, acc.data());
        ++c;
      }
    }
    kernels::store_row(acc.data(), hidden, dst + t * row_bytes, y.dtype());
  }
  return result;
}

}  // namespace epx::comm
