// Normal-mode dispatch: every token goes once to each rank that holds one of
// its experts, written by the sender straight into the receiver's block
// (FP8-cast on the way), rows ordered by source rank, then token index.
//
// Rounds: request (counts, shapes, input verdicts) -> reply (where each
// sender's rows go) -> payload (direct stores or puts) -> done signals.
#include <cstring>

#include "comm/buffer_impl.hpp"
#include "comm/dispatch_rows.hpp"
#include "comm/forward.hpp"
#include "comm/payload.hpp"
#include "comm/validate.hpp"
#include "core/check.hpp"
#include "kernels/quant.hpp"

namespace epx::comm {

namespace {

constexpr int kMaxAlignment = 1 << 20;
// Token indices and counts are 32-bit (as the layout's i32 counts).
constexpr std::int64_t kMaxTokens = std::int64_t{1} << 31;

// The payload of a dispatch as the caller gave it: a plain tensor (scales
// null) or an Fp8Tensor's x and scales.
struct Payload {
  const Tensor& x;
  const Tensor* scales;
};

// Checks x and options (shared by both dispatch forms); fills the payload part of the plan.
void plan_payload(Plan& p, const Payload& in, const DispatchOptions& o, std::int64_t tokens,
                  const char* op) {
  const Tensor& x = in.x;
  const char* x_name = in.scales ? "x.x" : "x";
  EPX_CHECK(tokens < kMaxTokens, InvalidArgument, op, ": ", tokens, " tokens, expected fewer than ",
            kMaxTokens);
  if (in.scales) {
    check_tensor(x, op, x_name, {DType::e4m3}, 2);
  } else {
    check_tensor(x, op, x_name, {DType::f32, DType::bf16, DType::e4m3}, 2);
    EPX_CHECK(x.dtype() != DType::e4m3, InvalidArgument, op, ": x is ", x.describe(),
              " without its scales; pass an already-quantised x as Fp8Tensor{x, scales}",
              " (scales f32 [T, H/128])");
  }
  check_dim(x, 0, tokens, op, x_name, "number of tokens");
  p.tokens = tokens;
  p.hidden = x.dim(1);
  p.x = static_cast<const std::byte*>(x.raw());
  p.x_dtype = x.dtype();
  EPX_CHECK(o.expert_alignment >= 1 && o.expert_alignment <= kMaxAlignment, InvalidArgument, op,
            ": options.expert_alignment = ", o.expert_alignment, ", expected 1 to ", kMaxAlignment);
  const bool prequantized = in.scales != nullptr;
  if (o.fp8 || prequantized) {
    EPX_CHECK(p.hidden % kScaleBlock == 0, InvalidArgument, op, ": hidden = ", x_name,
              ".dim(1) = ", p.hidden,
              ", expected a multiple of 128 for FP8 (one scale per 128 channels)");
    p.num_scales = p.hidden / kScaleBlock;
    p.wire = DType::e4m3;
    p.quantize = !prequantized;
    p.ue8m0 = o.ue8m0;
  } else {
    p.wire = x.dtype();
  }
  if (prequantized) {
    check_tensor(*in.scales, op, "x.scales", {DType::f32}, 2);
    check_dim(*in.scales, 0, tokens, op, "x.scales", "number of tokens");
    check_dim(*in.scales, 1, p.num_scales, op, "x.scales", "hidden / 128");
    p.x_scales = in.scales->data<float>();
  }
  p.row_bytes = static_cast<std::size_t>(p.hidden) * dtype_size(p.wire);
}

// Casts every token that goes somewhere to FP8 once, into per-thread
// scratch, and turns the plan into a pre-quantized one. A token usually goes
// to several ranks: casting once and copying the half-size rows beats casting
// per destination.
void quantize_once(Plan& p, const std::vector<std::vector<std::int32_t>>& send_tokens) {
  if (!p.quantize || p.tokens == 0) return;
  thread_local std::vector<std::uint8_t> q;
  thread_local std::vector<float> scales;
  thread_local std::vector<char> needed;
  const std::size_t T = static_cast<std::size_t>(p.tokens), H = static_cast<std::size_t>(p.hidden);
  const std::size_t S = static_cast<std::size_t>(p.num_scales);
  if (q.size() < T * H) q.resize(T * H);
  if (scales.size() < T * S) scales.resize(T * S);
  needed.assign(T, 0);
  for (const auto& list : send_tokens)
    for (std::int32_t t : list) needed[static_cast<std::size_t>(t)] = 1;
  const std::size_t in_row = H * dtype_size(p.x_dtype);
  for (std::size_t t = 0; t < T; ++t)
    if (needed[t])
      kernels::quantize_row_fp8(p.x + t * in_row, p.x_dtype, p.hidden, q.data() + t * H,
                                scales.data() + t * S, p.ue8m0);
  p.x = reinterpret_cast<const std::byte*>(q.data());
  p.x_dtype = DType::e4m3;
  p.x_scales = scales.data();
  p.quantize = false;
}

// Every rank must move the same kind of payload.
void check_same_payload(const std::vector<Message>& in, const Plan& p, const char* op) {
  for (std::size_t r = 0; r < in.size(); ++r) {
    const DispatchRequest& v = in[r].as<DispatchRequest>();
    EPX_CHECK_AGREED(v.hidden == p.hidden && v.dtype == std::int64_t(p.wire) && v.topk == p.topk &&
                         v.experts == p.experts && v.scales == p.num_scales && v.ue8m0 == p.ue8m0,
                     op, ": rank ", r, " sends hidden ", v.hidden, ", ", dtype_name(DType(v.dtype)),
                     v.ue8m0 ? " (ue8m0)" : "", " payload, top-", v.topk, " of ", v.experts,
                     " experts, but this rank hidden ", p.hidden, ", ", dtype_name(p.wire),
                     p.ue8m0 ? " (ue8m0)" : "", " payload, top-", p.topk, " of ", p.experts,
                     "; all ranks must agree");
  }
}

// node_tokens: the hierarchical path's batches (empty on the flat path); a
// rank's batch for a node is announced to its forwarder there.
std::vector<Message> request_messages(const Buffer::Impl& I, const Plan& p,
                                      const std::vector<std::vector<std::int32_t>>& send_tokens,
                                      const std::vector<std::vector<std::int32_t>>& node_tokens,
                                      const std::string& err) {
  std::vector<Message> out(send_tokens.size(), I.control.stamp());
  const int me = I.group.rank();
  for (std::size_t r = 0; r < out.size(); ++r) {
    DispatchRequest& v = out[r].as<DispatchRequest>();
    v.rows = static_cast<std::int64_t>(send_tokens[r].size());
    const int n = I.topo.node_of(static_cast<int>(r));
    if (I.topo.hierarchical() && !node_tokens.empty() && n != I.topo.node_of(me) &&
        static_cast<int>(r) == I.topo.forwarder(me, n))
      v.batch_rows = static_cast<std::int64_t>(node_tokens[n].size());
    v.hidden = p.hidden;
    v.dtype = static_cast<std::int64_t>(p.wire);
    v.topk = p.topk;
    v.experts = p.experts;
    v.scales = p.num_scales;
    v.ue8m0 = p.ue8m0;
    if (!err.empty()) out[r].failed = 1, Control::set_text(out[r], err);
  }
  return out;
}

// The flat path: every rank writes its rows into every receiver's block
// itself (one node, or one rank per node).
Arena::Block run_dispatch_flat(Buffer::Impl& I, const Plan& p,
                               const std::vector<std::vector<std::int32_t>>& send_tokens,
                               const RowSource& src, const std::vector<std::int64_t>& recv_prefix,
                               const core::Deadline& deadline) {
  const int R = I.group.size(), me = I.group.rank();
  const PayloadLayout L(recv_prefix[R], p.row_bytes, p.num_scales, p.topk);
  Buffer::Impl::Reserved res =
      I.reserve(Round::Reply, L.total, reply_messages(I.control, recv_prefix), "", deadline);

  // Start with the next rank, not rank 0, so that senders spread over receivers.
  // Every peer's rows are issued before the first signal waits for its puts
  // to complete, so transfers to different peers overlap.
  for (int i = 1; i <= R; ++i) {
    const int peer = (me + i) % R;
    write_rows(I.fabric, target_of(peer, res.in[peer]), p, send_tokens[peer].data(),
               send_tokens[peer].size(), src, peer);
  }
  for (int i = 1; i <= R; ++i) I.control.signal_done((me + i) % R);
  for (int i = 1; i <= R; ++i)
    I.control.wait_done((me + R - i) % R, deadline, "receive: its rows for this rank");
  return std::move(res.block);
}

// The rows this rank sends, after quantize_once: x in the wire dtype; top-k
// in the normal dispatch (with_topk), none in the cached one.
RowSource row_source(const Plan& p, bool with_topk, const std::int64_t* topk_idx,
                     const float* topk_weights) {
  return RowSource{p.x, p.x_scales, topk_idx, topk_weights, with_topk};
}

// with_topk: the normal dispatch returns topk tensors (also [M,0] when K = 0);
// the cached one does not.
DispatchResult make_result(const Arena::Block& block, const Plan& p, std::int64_t M,
                           bool with_topk) {
  const PayloadLayout L(M, p.row_bytes, p.num_scales, p.topk);
  DispatchResult r;
  r.x = Tensor::view(block.lease, block.ptr + L.x, {M, p.hidden}, p.wire);
  if (p.num_scales)
    r.x_scales = Tensor::view(block.lease, block.ptr + L.scales, {M, p.num_scales}, DType::f32);
  if (with_topk) {
    r.topk_idx = Tensor::view(block.lease, block.ptr + L.topk_idx, {M, p.topk}, DType::i64);
    r.topk_weights = Tensor::view(block.lease, block.ptr + L.topk_weights, {M, p.topk}, DType::f32);
  }
  return r;
}

std::vector<int> count_per_expert(const Tensor& topk_idx, int local_experts, int alignment) {
  std::vector<int> n(static_cast<std::size_t>(local_experts), 0);
  const std::int64_t* idx = topk_idx.data<std::int64_t>();
  for (std::int64_t i = 0; i < topk_idx.numel(); ++i)
    if (idx[i] >= 0) ++n[static_cast<std::size_t>(idx[i])];
  for (int& c : n) c = (c + alignment - 1) / alignment * alignment;
  return n;
}

// A fresh dispatch; the handle's state is returned next to the result (the
// Buffer wraps it: Handle's constructor is the Buffer's).
struct Fresh {
  DispatchResult result;
  std::shared_ptr<detail::HandleState> state;
};

Fresh fresh_dispatch(Buffer::Impl& I, const Payload& x, const Tensor& topk_idx,
                     const Tensor& topk_weights, const Layout& layout,
                     const DispatchOptions& options) {
  return I.guarded([&]() -> Fresh {
    I.control.begin(Op::Dispatch);
    const core::Deadline deadline = I.deadline();
    const int R = I.group.size();
    const char* op = "dispatch";

    Plan p;
    std::vector<std::vector<std::int32_t>> send_tokens(R);
    const std::string err = validation_error([&] {
      check_tensor(topk_idx, op, "topk_idx", {DType::i64}, 2);
      const std::int64_t T = topk_idx.dim(0);
      plan_payload(p, x, options, T, op);
      check_tensor(topk_weights, op, "topk_weights", {DType::f32}, 2);
      check_dim(topk_weights, 0, T, op, "topk_weights", "topk_idx.dim(0)");
      check_dim(topk_weights, 1, topk_idx.dim(1), op, "topk_weights", "topk_idx.dim(1)");
      p.topk = topk_idx.dim(1);
      p.experts = layout.num_experts;
      EPX_CHECK(layout.num_experts > 0 && layout.num_experts % R == 0, InvalidArgument, op,
                ": layout.num_experts = ", layout.num_experts,
                ", expected a positive multiple of the group size ", R,
                " (use the layout get_dispatch_layout returned)");
      check_tensor(layout.is_token_in_rank, op, "layout.is_token_in_rank", {DType::boolean}, 2);
      check_dim(layout.is_token_in_rank, 0, T, op, "layout.is_token_in_rank", "number of tokens");
      check_dim(layout.is_token_in_rank, 1, R, op, "layout.is_token_in_rank", "group size");
      const std::uint64_t print = fingerprint(topk_idx);
      EPX_CHECK(layout.topk_fingerprint == print, InvalidArgument, op,
                ": layout was not computed from this topk_idx (layout.topk_fingerprint = ",
                layout.topk_fingerprint, ", topk_idx's = ", print,
                "); call get_dispatch_layout on the topk_idx you dispatch");
      const bool* in_rank = layout.is_token_in_rank.data<bool>();
      for (std::int64_t t = 0; t < T; ++t)
        for (int r = 0; r < R; ++r)
          if (in_rank[t * R + r]) send_tokens[r].push_back(static_cast<std::int32_t>(t));
    });

    std::vector<std::vector<std::int32_t>> node_tokens;
    if (err.empty() && I.topo.hierarchical())
      node_tokens = tokens_per_node(I.topo, I.group.rank(), send_tokens, p.tokens);
    std::vector<Message> requests = I.control.exchange(
        Round::Request, request_messages(I, p, send_tokens, node_tokens, err), deadline);
    I.control.agree(requests, err);
    check_same_payload(requests, p, op);

    quantize_once(p, send_tokens);
    std::vector<std::int64_t> recv_prefix = receive_prefix(requests);
    std::vector<Route> routes;
    const RowSource src =
        row_source(p, true, topk_idx.data<std::int64_t>(), topk_weights.data<float>());
    Arena::Block block =
        I.topo.hierarchical()
            ? run_dispatch_hierarchical(I, p, send_tokens, node_tokens, requests, src, recv_prefix,
                                        nullptr, &routes, deadline)
            : run_dispatch_flat(I, p, send_tokens, src, recv_prefix, deadline);
    const std::int64_t M = recv_prefix[R];
    DispatchResult result = make_result(block, p, M, /*with_topk=*/true);
    result.num_recv_tokens_per_expert =
        count_per_expert(result.topk_idx, p.experts / R, options.expert_alignment);

    auto state = std::make_shared<detail::HandleState>();
    state->buffer_id = I.id;
    state->seq = I.control.seq();
    state->num_ranks = R;
    state->num_tokens = p.tokens;
    state->hidden = p.hidden;
    state->send_prefix.assign(R + 1, 0);
    for (int r = 0; r < R; ++r)
      state->send_prefix[r + 1] = state->send_prefix[r] + static_cast<std::int64_t>(send_tokens[r].size());
    state->send_tokens = std::move(send_tokens);
    state->recv_prefix = std::move(recv_prefix);
    state->node_tokens = std::move(node_tokens);
    state->routes = std::move(routes);
    state->num_recv_tokens_per_expert = result.num_recv_tokens_per_expert;
    return Fresh{std::move(result), std::move(state)};
  });
}

DispatchResult cached_dispatch(Buffer::Impl& I, const Payload& x, const Handle& handle,
                               const DispatchOptions& options) {
  return I.guarded([&]() -> DispatchResult {
    I.control.begin(Op::CachedDispatch);
    const core::Deadline deadline = I.deadline();
    const int R = I.group.size();
    const char* op = "dispatch (cached)";

    Plan p;
    // The handle's routing, used in place (empty lists when the input is bad).
    const std::vector<std::vector<std::int32_t>> none(static_cast<std::size_t>(R));
    const std::vector<std::vector<std::int32_t>>* send_tokens = &none;
    const std::vector<std::vector<std::int32_t>>* node_tokens = &none;
    std::uint64_t handle_seq = 0;
    const std::string err = validation_error([&] {
      check_handle(handle, I.id, R, op);
      const detail::HandleState& h = *handle.state();
      plan_payload(p, x, options, h.num_tokens, op);
      EPX_CHECK(options.expert_alignment == 1, InvalidArgument, op,
                ": options.expert_alignment = ", options.expert_alignment,
                ", expected 1: the cached dispatch keeps the counts of the handle's dispatch");
      send_tokens = &h.send_tokens;
      node_tokens = &h.node_tokens;
      handle_seq = h.seq;
    });
    std::vector<Message> out = request_messages(I, p, *send_tokens, *node_tokens, err);
    for (Message& m : out) m.as<DispatchRequest>().handle = static_cast<std::int64_t>(handle_seq);
    std::vector<Message> requests = I.control.exchange(Round::Request, out, deadline);
    I.control.agree(requests, err);
    check_same_payload(requests, p, op);
    for (int r = 0; r < R; ++r)
      EPX_CHECK_AGREED(
          requests[r].as<DispatchRequest>().handle == static_cast<std::int64_t>(handle_seq), op,
          ": rank ", r, " passed the handle of dispatch #",
          requests[r].as<DispatchRequest>().handle, " but this rank that of dispatch #", handle_seq,
          "; all ranks must pass the handles of the same dispatch");

    quantize_once(p, *send_tokens);
    const std::vector<std::int64_t> recv_prefix = receive_prefix(requests);
    const RowSource src = row_source(p, false, nullptr, nullptr);
    Arena::Block block =
        I.topo.hierarchical()
            ? run_dispatch_hierarchical(I, p, *send_tokens, *node_tokens, requests, src,
                                        recv_prefix, &handle.state()->routes, nullptr, deadline)
            : run_dispatch_flat(I, p, *send_tokens, src, recv_prefix, deadline);
    DispatchResult result = make_result(block, p, recv_prefix[R], /*with_topk=*/false);
    result.num_recv_tokens_per_expert = handle.state()->num_recv_tokens_per_expert;
    result.handle = handle;
    return result;
  });
}

}  // namespace

DispatchResult Buffer::dispatch(const Tensor& x, const Tensor& topk_idx, const Tensor& topk_weights,
                                const Layout& layout, const DispatchOptions& options) {
  Fresh f = fresh_dispatch(*impl_, {x, nullptr}, topk_idx, topk_weights, layout, options);
  f.result.handle = Handle(std::move(f.state));
  return std::move(f.result);
}

DispatchResult Buffer::dispatch(const Fp8Tensor& x, const Tensor& topk_idx,
                                const Tensor& topk_weights, const Layout& layout,
                                const DispatchOptions& options) {
  Fresh f = fresh_dispatch(*impl_, {x.x, &x.scales}, topk_idx, topk_weights, layout, options);
  f.result.handle = Handle(std::move(f.state));
  return std::move(f.result);
}

DispatchResult Buffer::dispatch(const Tensor& x, const Handle& handle,
                                const DispatchOptions& options) {
  return cached_dispatch(*impl_, {x, nullptr}, handle, options);
}

DispatchResult Buffer::dispatch(const Fp8Tensor& x, const Handle& handle,
                                const DispatchOptions& options) {
  return cached_dispatch(*impl_, {x.x, &x.scales}, handle, options);
}

}  // namespace epx::comm
