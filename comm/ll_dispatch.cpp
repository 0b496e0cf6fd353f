// Low-latency dispatch: one control round (verdicts, and "my half is free"),
// then every token is written once into its fixed slot at each rank holding
// one of its experts, with a mask of those experts, followed by a header (the
// row count) and an arrival signal per receiver. finish() (the hook) waits
// for the arrivals and lays out each local expert's rows in source order.
#include <cstring>

#include "comm/buffer_impl.hpp"
#include "comm/payload.hpp"
#include "comm/validate.hpp"
#include "core/check.hpp"
#include "kernels/quant.hpp"

namespace epx::comm {

namespace {
std::byte* at(LowLatencyState& st, std::size_t offset) { return st.base + offset; }
}  // namespace

void wait_for_sources(LowLatencyState& st, std::size_t (LowLatencyLayout::*offset_of)(int) const,
                      std::uint64_t call, const core::Deadline& deadline, const char* what) {
  const int R = st.layout.ranks, me = st.fabric.group().rank();
  for (int i = 1; i <= R; ++i) {
    const int s = (me + R - i) % R;
    st.fabric.wait(st.region, (st.layout.*offset_of)(s), call, deadline, [&] {
      return core::concat(what, " #", call, ": waiting for rank ", s, "'s rows");
    });
  }
}

void PendingLowLatencyDispatch::finish() {
  if (done) return;
  LowLatencyState& st = *state;
  EPX_CHECK(st.buffer_alive, InvalidArgument, "low_latency_dispatch #", call,
            ": hook called after its Buffer was destroyed");
  EPX_CHECK(st.dispatch_half[half].call == call, InvalidArgument, "low_latency_dispatch #", call,
            ": hook called after low_latency_dispatch #", st.dispatch_half[half].call,
            " reused its buffer half; call the hook before the second-next dispatch");
  const LowLatencyLayout& L = st.layout;
  wait_for_sources(st, &LowLatencyLayout::dispatch_arrival, call, core::Deadline(timeout_s),
                   "low_latency_dispatch");
  const int R = L.ranks, El = L.local_experts, M = L.max_tokens, W = L.mask_words;
  const auto* headers = reinterpret_cast<const std::int32_t*>(at(st, L.headers_at(half)));
  const std::byte* in_rows = at(st, L.recv_rows_at(half));
  const auto* in_scales = reinterpret_cast<const float*>(at(st, L.recv_scales_at(half)));
  const auto* masks = reinterpret_cast<const std::uint64_t*>(at(st, L.recv_masks_at(half)));
  std::byte* rows = at(st, L.dispatch_rows_at(half));
  auto* out_scales = reinterpret_cast<float*>(at(st, L.dispatch_scales_at(half)));
  const std::size_t S = scales ? static_cast<std::size_t>(L.num_scales) : 0;
  // Counts go to the result only while someone holds it.
  const std::shared_ptr<void> owner = results.lock();
  std::int32_t* counts = owner ? count : nullptr;
  first.assign(static_cast<std::size_t>(El) * (R + 1), 0);
  for (int e = 0; e < El; ++e) {
    // Expert e's rows: every received row whose mask has bit e, by source,
    // then in the order the source sent them (its token order).
    std::size_t packed = 0;
    const std::uint64_t bit = std::uint64_t{1} << (e % 64);
    for (int s = 0; s < R; ++s) {
      first[static_cast<std::size_t>(e) * (R + 1) + s] = static_cast<std::int32_t>(packed);
      const std::size_t n = static_cast<std::size_t>(headers[s]);
      for (std::size_t i = 0; i < n; ++i) {
        const std::size_t slot = static_cast<std::size_t>(s) * M + i;
        if (!(masks[slot * W + e / 64] & bit)) continue;
        const std::size_t to = static_cast<std::size_t>(e) * R * M + packed;
        std::memcpy(rows + to * row_bytes, in_rows + slot * row_bytes, row_bytes);
        if (S) std::memcpy(out_scales + to * S, in_scales + slot * S, S * sizeof(float));
        ++packed;
      }
    }
    first[static_cast<std::size_t>(e) * (R + 1) + R] = static_cast<std::int32_t>(packed);
    if (counts) counts[e] = static_cast<std::int32_t>(packed);
  }
  if (st.dispatch_half[half].call == call) st.dispatch_half[half].finished = true;
  done = true;
}

LowLatencyDispatchResult Buffer::low_latency_dispatch(const Tensor& x, const Tensor& topk_idx,
                                                      const LowLatencyOptions& options) {
  Impl& I = *impl_;
  return I.guarded([&]() -> LowLatencyDispatchResult {
    I.control.begin(Op::LowLatencyDispatch);
    const core::Deadline deadline = I.deadline();
    const int R = I.group.size(), me = I.group.rank();
    const char* op = "low_latency_dispatch";
    LowLatencyState* st = I.ll.get();
    const std::uint64_t call = st ? st->dispatches + 1 : 0;
    int h = 0;  // this rank's half for the call: one whose results nobody holds

    DType wire = DType::bf16;
    std::int64_t T = 0, K = 0, H = 0;
    const std::string err = validation_error([&] {
      EPX_CHECK(st, InvalidArgument, op, ": this Buffer was built without options.low_latency");
      const LowLatencyLayout& L = st->layout;
      check_tensor(x, op, "x", {DType::f32, DType::bf16}, 2);
      check_tensor(topk_idx, op, "topk_idx", {DType::i64}, 2);
      T = x.dim(0);
      H = x.dim(1);
      K = topk_idx.dim(1);
      check_dim(topk_idx, 0, T, op, "topk_idx", "x.dim(0)");
      EPX_CHECK(T <= L.max_tokens, InvalidArgument, op, ": x has T = ", T,
                " tokens, expected <= options.max_tokens_per_rank = ", L.max_tokens);
      EPX_CHECK(H == L.hidden, InvalidArgument, op, ": x.dim(1) = ", H,
                ", expected options.hidden = ", L.hidden);
      EPX_CHECK(!options.fp8 || H % kScaleBlock == 0, InvalidArgument, op, ": hidden = ", H,
                ", expected a multiple of 128 with options.fp8 (or fp8 = false)");
      check_topk_ids(topk_idx, L.experts, op);
      // The older half first: plain alternation while results are dropped in order.
      const int older = static_cast<int>(call % 2);
      h = st->dispatch_half[older].results.expired() ? older : 1 - older;
      EPX_CHECK(st->dispatch_half[h].results.expired(), InvalidArgument, op,
                ": the results of low_latency_dispatch #", st->dispatch_half[0].call, " and #",
                st->dispatch_half[1].call, " are both still held; two calls can be in flight: "
                "drop one result's tensors first");
      wire = options.fp8 ? DType::e4m3 : x.dtype();
    });
    // The half about to be reused must hold no data still arriving.
    if (st && err.empty() && !st->dispatch_half[h].finished)
      wait_for_sources(*st, &LowLatencyLayout::dispatch_arrival, st->dispatch_half[h].call,
                       deadline, op);

    std::vector<Message> out(R, I.control.stamp());
    for (Message& m : out) {
      LowLatencyDispatchRequest& v = m.as<LowLatencyDispatchRequest>();
      v.wire = static_cast<std::int64_t>(wire);
      v.hidden = H;
      v.ue8m0 = options.fp8 && options.ue8m0;
      v.half = h;
      if (!err.empty()) m.failed = 1, Control::set_text(m, err);
    }
    const std::vector<Message> in = I.control.exchange(Round::Request, out, deadline);
    I.control.agree(in, err);
    for (int r = 0; r < R; ++r) {
      const LowLatencyDispatchRequest& theirs = in[r].as<LowLatencyDispatchRequest>();
      const LowLatencyDispatchRequest& mine = out[r].as<LowLatencyDispatchRequest>();
      EPX_CHECK_AGREED(theirs.wire == mine.wire && theirs.ue8m0 == mine.ue8m0, op, ": rank ", r,
                       " sends ", dtype_name(DType(theirs.wire)), theirs.ue8m0 ? " (ue8m0)" : "",
                       " rows, this rank ", dtype_name(wire), mine.ue8m0 ? " (ue8m0)" : "",
                       "; all ranks must pass the same x dtype and fp8 options");
    }

    // Every receiver's half is free: write the rows.
    const LowLatencyLayout& L = st->layout;
    st->dispatches = call;
    st->dispatch_half[h].call = call;
    st->dispatch_half[h].finished = false;
    const int El = L.local_experts, M = L.max_tokens;
    const std::size_t row_bytes = static_cast<std::size_t>(H) * dtype_size(wire);
    const std::size_t S = options.fp8 ? static_cast<std::size_t>(L.num_scales) : 0;
    const std::byte* src = static_cast<const std::byte*>(x.raw());
    thread_local std::vector<std::uint8_t> q;
    thread_local std::vector<float> q_scales;
    if (options.fp8) {  // cast each token once, however many experts it goes to
      q.resize(static_cast<std::size_t>(T * H));
      q_scales.resize(static_cast<std::size_t>(T) * S);
      kernels::quantize_rows_fp8(x.raw(), x.dtype(), T, H, q.data(), q_scales.data(), options.ue8m0);
      src = reinterpret_cast<const std::byte*>(q.data());
    }
    auto state = std::make_shared<detail::LowLatencyHandleState>();
    state->buffer_id = I.id;
    state->call = call;
    state->half = h;
    state->tokens = T;
    state->topk = K;
    state->topk_fingerprint = fingerprint(topk_idx);
    state->slot.assign(static_cast<std::size_t>(T * K), -1);
    // Per token: the slot of each (token, expert) pair among this rank's
    // tokens for that expert (combine finds the rows by it), and one row per
    // destination rank with the mask of that rank's experts it is for.
    const int W = L.mask_words;
    std::vector<std::int32_t> per_expert(static_cast<std::size_t>(L.experts), 0);
    std::vector<std::int32_t> rows_to(static_cast<std::size_t>(R), 0);
    std::vector<std::uint64_t> mask(static_cast<std::size_t>(R) * W);
    // A put's source must stay unchanged until the signal that follows it (on
    // RMA transports the put is asynchronous): every row's mask keeps its own
    // place until the end of the call.
    std::vector<std::uint64_t> sent_masks(static_cast<std::size_t>(R) * M * W);
    const std::int64_t* idx = topk_idx.data<std::int64_t>();
    for (std::int64_t t = 0; t < T; ++t) {
      std::fill(mask.begin(), mask.end(), 0);
      for (std::int64_t k = 0; k < K; ++k) {
        const std::int64_t e = idx[t * K + k];
        if (e < 0) continue;
        state->slot[static_cast<std::size_t>(t * K + k)] = per_expert[static_cast<std::size_t>(e)]++;
        const std::size_t r = static_cast<std::size_t>(e / El), le = static_cast<std::size_t>(e % El);
        mask[r * W + le / 64] |= std::uint64_t{1} << (le % 64);
      }
      for (int i = 1; i <= R; ++i) {
        const int r = (me + i) % R;
        const std::uint64_t* mr = mask.data() + static_cast<std::size_t>(r) * W;
        if (std::all_of(mr, mr + W, [](std::uint64_t w) { return w == 0; })) continue;
        const std::size_t i_r = static_cast<std::size_t>(rows_to[r]++);
        std::uint64_t* m = sent_masks.data() + (static_cast<std::size_t>(r) * M + i_r) * W;
        std::copy(mr, mr + W, m);
        const std::size_t slot = static_cast<std::size_t>(me) * M + i_r;
        const int hr = static_cast<int>(in[r].as<LowLatencyDispatchRequest>().half);
        transport::Fabric& tr = I.fabric;
        tr.put(r, src + t * row_bytes, st->region, L.recv_rows_at(hr) + slot * row_bytes, row_bytes);
        if (S)
          tr.put(r, q_scales.data() + t * S, st->region,
                 L.recv_scales_at(hr) + slot * S * sizeof(float), S * sizeof(float));
        tr.put(r, m, st->region, L.recv_masks_at(hr) + slot * W * sizeof(std::uint64_t),
               W * sizeof(std::uint64_t));
      }
    }
    for (int i = 1; i <= R; ++i) {
      const int r = (me + i) % R;
      I.fabric.put(r, &rows_to[static_cast<std::size_t>(r)], st->region,
                   L.headers_at(static_cast<int>(in[r].as<LowLatencyDispatchRequest>().half)) +
                       static_cast<std::size_t>(me) * sizeof(std::int32_t),
                   sizeof(std::int32_t));
      I.fabric.to(r).signal(r, st->region, L.dispatch_arrival(me), call);
    }

    // The result views the half; its owner marks the half busy while held.
    auto pending = std::make_shared<PendingLowLatencyDispatch>();
    pending->state = I.ll;
    pending->call = call;
    pending->half = h;
    pending->row_bytes = row_bytes;
    pending->scales = S > 0;
    pending->timeout_s = I.control.timeout_s();
    state->pending = pending;
    // The owner of every result tensor keeps the region mapped (results may
    // outlive the Buffer), holds count, and while held marks the half busy.
    struct ResultOwner {
      std::shared_ptr<std::byte> memory;
      std::vector<std::int32_t> count;
    };
    auto owner = std::make_shared<ResultOwner>(ResultOwner{st->memory, std::vector<std::int32_t>(El, 0)});
    pending->results = owner;
    pending->count = owner->count.data();
    st->dispatch_half[h].results = owner;
    LowLatencyDispatchResult result;
    const std::int64_t rows = static_cast<std::int64_t>(R) * M;
    result.x = Tensor::view(owner, st->base + L.dispatch_rows_at(h), {El, rows, H}, wire);
    if (S)
      result.x_scales = Tensor::view(owner, st->base + L.dispatch_scales_at(h),
                                     {El, rows, static_cast<std::int64_t>(S)}, DType::f32);
    result.count = Tensor::view(owner, owner->count.data(), {El}, DType::i32);
    result.handle = LowLatencyHandle(std::move(state));
    if (options.return_recv_hook) {
      // A timeout inside finish() has aborted the group already (Fabric::wait).
      result.hook = [pending] { pending->finish(); };
    } else {
      pending->finish();
    }
    return result;
  });
}

}  // namespace epx::comm
