// Low-latency combine: one control round (verdicts, and "my half is free"),
// then each expert's rows go back to their source ranks, one contiguous put
// per (local expert, source) into the source's slots of that expert, with an
// arrival signal per source. finish() (the hook) waits and sums, per token,
// weight * row over its valid top-k entries in k order, in f32.
#include <cstring>

#include "comm/buffer_impl.hpp"
#include "comm/validate.hpp"
#include "core/check.hpp"
#include "kernels/reduce.hpp"

namespace epx::comm {

namespace {
struct PendingCombine {
  std::shared_ptr<LowLatencyState> state;
  std::uint64_t call = 0;
  int half = 0;
  DType dtype = DType::bf16;
  std::int64_t tokens = 0, topk = 0, hidden = 0;
  std::vector<std::int64_t> idx;  // copies: the caller may reuse its tensors before the hook
  std::vector<float> weights;
  std::shared_ptr<const detail::LowLatencyHandleState> handle;
  Tensor out;
  double timeout_s = 0;
  bool done = false;

  // Token t: weight * row over its valid top-k entries, in k order.
  void sum(const std::byte* rows, std::size_t row_bytes, int M) {
    const std::int64_t K = topk;
    std::vector<const void*> picked(static_cast<std::size_t>(K));
    std::vector<float> w(static_cast<std::size_t>(K));
    auto* dst = static_cast<std::byte*>(out.raw());
    for (std::int64_t t = 0; t < tokens; ++t) {
      int n = 0;
      for (std::int64_t k = 0; k < K; ++k) {
        const std::size_t tk = static_cast<std::size_t>(t * K + k);
        if (idx[tk] < 0) continue;
        const std::size_t j = static_cast<std::size_t>(handle->slot[tk]);
        picked[n] = rows + (static_cast<std::size_t>(idx[tk]) * M + j) * row_bytes;
        w[n++] = weights[tk];
      }
      kernels::weighted_sum_rows(picked.data(), w.data(), n, dtype, hidden,
                                 dst + static_cast<std::size_t>(t) * row_bytes);
    }
  }

  void finish() {
    if (done) return;
    LowLatencyState& st = *state;
    EPX_CHECK(st.buffer_alive, InvalidArgument, "low_latency_combine #", call,
              ": hook called after its Buffer was destroyed");
    EPX_CHECK(st.combine_half[half].call == call, InvalidArgument, "low_latency_combine #", call,
              ": hook called after low_latency_combine #", st.combine_half[half].call,
              " reused its buffer half; call the hook before the second-next combine");
    wait_for_sources(st, &LowLatencyLayout::combine_arrival, call, core::Deadline(timeout_s),
                     "low_latency_combine");
    const std::byte* rows = st.base + st.layout.combine_rows_at(half);
    const std::size_t row_bytes = static_cast<std::size_t>(hidden) * dtype_size(dtype);
    sum(rows, row_bytes, st.layout.max_tokens);
    if (st.combine_half[half].call == call) st.combine_half[half].finished = true;
    done = true;
  }
};
}  // namespace

LowLatencyCombineResult Buffer::low_latency_combine(const Tensor& y, const Tensor& topk_idx,
                                                    const Tensor& topk_weights,
                                                    const LowLatencyHandle& handle,
                                                    const LowLatencyOptions& options) {
  Impl& I = *impl_;
  return I.guarded([&]() -> LowLatencyCombineResult {
    I.control.begin(Op::LowLatencyCombine);
    const core::Deadline deadline = I.deadline();
    const int R = I.group.size(), me = I.group.rank();
    const char* op = "low_latency_combine";
    LowLatencyState* st = I.ll.get();
    const std::uint64_t call = st ? st->combines + 1 : 0;
    const int h = static_cast<int>(call % 2);

    const detail::LowLatencyHandleState* hs = nullptr;
    const std::string err = validation_error([&] {
      EPX_CHECK(st, InvalidArgument, op, ": this Buffer was built without options.low_latency");
      const LowLatencyLayout& L = st->layout;
      EPX_CHECK(handle.defined(), InvalidArgument, op,
                ": handle is undefined (use the one low_latency_dispatch returned)");
      hs = handle.state().get();
      EPX_CHECK(hs->buffer_id == I.id, InvalidArgument, op, ": handle comes from another Buffer (buffer ",
                hs->buffer_id, ", this is buffer ", I.id, ")");
      check_tensor(y, op, "y", {DType::f32, DType::bf16}, 3);
      check_dim(y, 0, L.local_experts, op, "y", "local experts");
      check_dim(y, 1, static_cast<std::int64_t>(R) * L.max_tokens, op, "y",
                "ranks * max_tokens_per_rank");
      check_dim(y, 2, L.hidden, op, "y", "options.hidden");
      check_tensor(topk_idx, op, "topk_idx", {DType::i64}, 2);
      check_tensor(topk_weights, op, "topk_weights", {DType::f32}, 2);
      check_dim(topk_idx, 0, hs->tokens, op, "topk_idx", "tokens of the handle's dispatch");
      check_dim(topk_idx, 1, hs->topk, op, "topk_idx", "top-k of the handle's dispatch");
      check_dim(topk_weights, 0, hs->tokens, op, "topk_weights", "tokens of the handle's dispatch");
      check_dim(topk_weights, 1, hs->topk, op, "topk_weights", "top-k of the handle's dispatch");
      EPX_CHECK(fingerprint(topk_idx) == hs->topk_fingerprint, InvalidArgument, op,
                ": topk_idx differs from the one given to low_latency_dispatch #", hs->call);
      EPX_CHECK(hs->pending->done || st->dispatch_half[hs->half].call == hs->call, InvalidArgument,
                op, ": the rows of low_latency_dispatch #", hs->call,
                " were never received (no hook call) and its buffer half was reused by #",
                st->dispatch_half[hs->half].call);
    });
    if (st && err.empty() && !st->combine_half[h].finished)
      wait_for_sources(*st, &LowLatencyLayout::combine_arrival, st->combine_half[h].call,
                       deadline, op);

    std::vector<Message> out(R, I.control.stamp());
    for (Message& m : out) {
      LowLatencyCombineRequest& v = m.as<LowLatencyCombineRequest>();
      v.dtype = static_cast<std::int64_t>(y.dtype());
      v.dispatch = hs ? static_cast<std::int64_t>(hs->call) : 0;
      if (!err.empty()) m.failed = 1, Control::set_text(m, err);
    }
    const std::vector<Message> in = I.control.exchange(Round::Request, out, deadline);
    I.control.agree(in, err);
    for (int r = 0; r < R; ++r) {
      const LowLatencyCombineRequest& theirs = in[r].as<LowLatencyCombineRequest>();
      const LowLatencyCombineRequest& mine = out[r].as<LowLatencyCombineRequest>();
      EPX_CHECK_AGREED(theirs.dtype == mine.dtype, op, ": rank ", r, " passes y of ",
                       dtype_name(DType(theirs.dtype)), ", this rank ", y.describe(),
                       "; all ranks must agree");
      EPX_CHECK_AGREED(theirs.dispatch == mine.dispatch, op, ": rank ", r,
                       " passed the handle of low_latency_dispatch #", theirs.dispatch,
                       ", this rank that of #", mine.dispatch,
                       "; all ranks must pass the handles of the same dispatch");
    }

    // The dispatch must have arrived (its hook may not have run yet).
    hs->pending->finish();
    const LowLatencyLayout& L = st->layout;
    st->combines = call;
    st->combine_half[h].call = call;
    st->combine_half[h].finished = false;
    const int El = L.local_experts, M = L.max_tokens;
    const std::size_t row_bytes = static_cast<std::size_t>(L.hidden) * dtype_size(y.dtype());
    const auto* src = static_cast<const std::byte*>(y.raw());
    const std::vector<std::int32_t>& first = hs->pending->first;
    for (int i = 1; i <= R; ++i) {
      const int s = (me + i) % R;
      for (int e = 0; e < El; ++e) {
        const std::size_t a = static_cast<std::size_t>(first[static_cast<std::size_t>(e) * (R + 1) + s]);
        const std::size_t b = static_cast<std::size_t>(first[static_cast<std::size_t>(e) * (R + 1) + s + 1]);
        if (a == b) continue;
        const std::size_t global = static_cast<std::size_t>(me) * El + static_cast<std::size_t>(e);
        I.fabric.put(s, src + (static_cast<std::size_t>(e) * R * M + a) * row_bytes, st->region,
                           L.combine_rows_at(h) + global * M * row_bytes, (b - a) * row_bytes);
      }
      I.fabric.to(s).signal(s, st->region, L.combine_arrival(me), call);
    }

    auto pending = std::make_shared<PendingCombine>();
    pending->state = I.ll;
    pending->call = call;
    pending->half = h;
    pending->dtype = y.dtype();
    pending->tokens = hs->tokens;
    pending->topk = hs->topk;
    pending->hidden = L.hidden;
    pending->idx.assign(topk_idx.data<std::int64_t>(), topk_idx.data<std::int64_t>() + topk_idx.numel());
    pending->weights.assign(topk_weights.data<float>(),
                            topk_weights.data<float>() + topk_weights.numel());
    pending->handle = handle.state();
    pending->out = Tensor::empty({hs->tokens, L.hidden}, y.dtype());
    pending->timeout_s = I.control.timeout_s();
    LowLatencyCombineResult result;
    result.x = pending->out;
    if (options.return_recv_hook) result.hook = [pending] { pending->finish(); };
    else pending->finish();
    return result;
  });
}

}  // namespace epx::comm
