// epx::comm: expert-parallel dispatch and combine (normal mode).
//
// Every call on a Buffer is collective over its Group: all ranks call the
// same operations in the same order. Bad input on any rank raises an
// epx::Error(InvalidArgument) on every rank, before any payload moves; every
// wait on a peer is bounded by BufferOptions::timeout_s.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include <epx/config.hpp>
#include <epx/group.hpp>
#include <epx/tensor.hpp>

namespace epx::comm {

struct BufferOptions {
  // Bytes of receive space per rank. Received tensors live in this space
  // (no copy out) until the last reference to them is dropped; a dispatch that
  // needs more grows the space (logged at WARN) rather than failing.
  std::size_t num_bytes = std::size_t{256} << 20;
  // Bound of every wait on a peer, seconds (inf: no limit). 0, the default:
  // EPX_TIMEOUT_S, or its default of 300. Negative or nan: InvalidArgument.
  double timeout_s = 0;

  // Low-latency mode (decode): fixed buffers registered once, double-buffered,
  // sized for these shapes (all ranks must pass the same values) on top of
  // num_bytes, which stays the receive space of the normal-mode calls.
  bool low_latency = false;
  int max_tokens_per_rank = 0;
  int hidden = 0;
  int num_experts = 0;
};

// Options of the low-latency calls.
struct LowLatencyOptions {
  bool fp8 = true;                // dispatch: e4m3 payload with per-token 1x128 f32 scales
  bool ue8m0 = false;             // with fp8: scales rounded up to powers of two
  bool return_recv_hook = false;  // only issue the sends; `hook()` waits and finishes
};

namespace detail {
struct LowLatencyHandleState;
}

// Where every row of a low-latency dispatch came from. Opaque.
class EPX_API LowLatencyHandle {
 public:
  LowLatencyHandle() = default;
  bool defined() const noexcept { return state_ != nullptr; }
  const std::shared_ptr<const detail::LowLatencyHandleState>& state() const noexcept {
    return state_;
  }

 private:
  friend class Buffer;
  explicit LowLatencyHandle(std::shared_ptr<const detail::LowLatencyHandleState> s)
      : state_(std::move(s)) {}
  std::shared_ptr<const detail::LowLatencyHandleState> state_;
};

struct LowLatencyDispatchResult {
  // [E_local, R * max_tokens_per_rank, H]: rows 0..count[e]-1 of local expert
  // e are its tokens, by source rank, then source token index. e4m3 with fp8,
  // else x's dtype. Lives in the buffer: valid until the second-next call.
  Tensor x;
  Tensor x_scales;  // [E_local, R * max_tokens_per_rank, H/128] f32 with fp8, else undefined
  Tensor count;     // [E_local] i32: valid rows per local expert
  LowLatencyHandle handle;
  std::function<void()> hook;  // with return_recv_hook: call before reading x, scales, count
};

struct LowLatencyCombineResult {
  Tensor x;                    // [T,H] in y's dtype: sum over valid k of w_k * y_k
  std::function<void()> hook;  // with return_recv_hook: call before reading x
};

// Routing counts for one topk_idx, from Buffer::get_dispatch_layout.
struct Layout {
  Tensor num_tokens_per_rank;    // [R] i32: tokens this rank sends to each rank
  Tensor num_tokens_per_node;    // [N] i32: tokens this rank sends to each node
  Tensor num_tokens_per_expert;  // [E] i32: (token, expert) pairs per expert
  Tensor is_token_in_rank;       // [T,R] boolean
  // Identify the topk_idx this layout was computed from (checked by dispatch).
  int num_experts = 0;
  std::uint64_t topk_fingerprint = 0;
};

namespace detail {
struct HandleState;
}

// What combine and the cached dispatch need from a dispatch: where every
// received row came from. Opaque; valid only with the Buffer that made it.
class EPX_API Handle {
 public:
  Handle() = default;
  bool defined() const noexcept { return state_ != nullptr; }
  std::int64_t num_tokens() const;       // T: tokens this rank dispatched
  std::int64_t num_recv_tokens() const;  // M: rows this rank received
  const std::shared_ptr<const detail::HandleState>& state() const noexcept { return state_; }

 private:
  friend class Buffer;
  explicit Handle(std::shared_ptr<const detail::HandleState> s) : state_(std::move(s)) {}
  std::shared_ptr<const detail::HandleState> state_;
};

struct DispatchOptions {
  bool fp8 = false;          // cast bf16/f32 x to e4m3 with per-token 1x128 scales on the way
  bool ue8m0 = false;        // with fp8: scales rounded up to powers of two
  int expert_alignment = 1;  // num_recv_tokens_per_expert rounded up to a multiple of this
};

// An already-quantised dispatch payload: an e4m3 tensor with its per-token
// 1x128 f32 scales, as DeepEP's (x, x_scales) tuple. Pass it where dispatch
// takes x: buffer.dispatch(Fp8Tensor{q, scales}, topk_idx, topk_weights, layout)
// (kernels::per_token_cast_to_fp8 makes the pair from f32/bf16).
struct Fp8Tensor {
  Tensor x;       // e4m3 [T,H], H % 128 == 0
  Tensor scales;  // f32 [T,H/128]: row t, block j is dequantised as float(x) * scales[t,j]
};

// Options of the normal-mode combine.
struct CombineOptions {
  // Across nodes, each node first sums the rows of its ranks for a token and
  // sends that partial sum back once. By default the partial crosses in f32
  // (no rounding before the final sum): with bf16 y that is twice the bytes
  // DeepEP sends, which rounds partials to bf16. true sends them in y's
  // dtype (bf16: half the inter-node bytes, one more rounding per remote
  // node). No effect within one node, with one rank per node, or with f32 y.
  bool partials_in_input_dtype = false;
};

struct DispatchResult {
  Tensor x;             // [M,H] in x's dtype, or e4m3 when fp8; rows by source rank, then token
  Tensor x_scales;      // [M,H/128] f32 when the payload is e4m3, else undefined
  Tensor topk_idx;      // [M,K] i64: local expert ids, -1 where the expert lives elsewhere
  Tensor topk_weights;  // [M,K] f32: 0 where topk_idx is -1
  std::vector<int> num_recv_tokens_per_expert;  // per local expert, rounded to expert_alignment
  Handle handle;
};

class EPX_API Buffer {
 public:
  // Collective. Keeps its own copy of the group (a handle: the caller's may
  // go away; docs/api.md states the lifetimes once). Explicit: a Group is not
  // a Buffer (a stray conversion would be a collective construction).
  explicit Buffer(Group& group, BufferOptions options = {});
  // Collective when the group spans several nodes (the one-sided windows of
  // the inter-node transport are freed together): each rank waits, up to
  // timeout_s, for the others to destroy their Buffer too. A rank that saw a
  // failure, or finds a failed or missing peer, leaks the windows instead of
  // waiting; it never hangs. Inside one node destruction is local.
  ~Buffer();
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  // topk_idx: i64 [T,K], -1 = no expert. Collective (ranks agree on validity).
  // Expert e lives on rank e / (num_experts / R). With a balancer placement,
  // pass the physical slots of balancer::route_to_replicas and num_experts =
  // the placement's P: slot p is then on rank p / (P/R), where it was placed.
  Layout get_dispatch_layout(const Tensor& topk_idx, int num_experts);

  // x: f32/bf16 [T,H] (options.fp8 casts it on the way), or an Fp8Tensor
  // (sent as it is; an e4m3 Tensor without its scales is InvalidArgument).
  // topk_weights: f32 [T,K].
  DispatchResult dispatch(const Tensor& x, const Tensor& topk_idx, const Tensor& topk_weights,
                          const Layout& layout, const DispatchOptions& options = {});
  DispatchResult dispatch(const Fp8Tensor& x, const Tensor& topk_idx, const Tensor& topk_weights,
                          const Layout& layout, const DispatchOptions& options = {});

  // Cached dispatch: the routing of `handle`, a new payload (the backward of
  // combine). x as above: [T,H] f32/bf16 (options.fp8 casts), or an Fp8Tensor.
  DispatchResult dispatch(const Tensor& x, const Handle& handle,
                          const DispatchOptions& options = {});
  DispatchResult dispatch(const Fp8Tensor& x, const Handle& handle,
                          const DispatchOptions& options = {});

  // y: [M,H'] f32/bf16, one row per received row. Returns [T,H'] in y's dtype:
  // row t is the unweighted sum of the rows sent back for token t (zeros for
  // tokens that went nowhere), accumulated in f32 and rounded once:
  //   sum over nodes n ascending of P_n, P_n = sum over the ranks of node n
  //   ascending of their rows, each sum from +0 in that order.
  // With one node (or one rank per node) this is the plain sum in rank order.
  // With options.partials_in_input_dtype, the P_n of other nodes than the
  // token owner's are rounded to y's dtype before the outer sum.
  Tensor combine(const Tensor& y, const Handle& handle, const CombineOptions& options = {});

  // A [M, hidden] tensor in this buffer's receive space for the expert
  // outputs of `handle`'s rows (local, not collective). A y there, or the
  // dispatched x reused in place, is read by the token owners directly in
  // combine's sum, with no copy; any other y is copied back first.
  Tensor combine_input(const Handle& handle, std::int64_t hidden, DType dtype);

  // Low-latency mode (BufferOptions::low_latency). Each (token, expert) pair
  // goes straight to its slot in the expert's rank; no count exchange first.
  // Two calls may be in flight; a third while both results are still held is
  // an error. x: bf16/f32 [T,H], T <= max_tokens_per_rank; topk_idx i64 [T,K].
  LowLatencyDispatchResult low_latency_dispatch(const Tensor& x, const Tensor& topk_idx,
                                                const LowLatencyOptions& options = {});

  // y: [E_local, R * max_tokens_per_rank, H] bf16/f32, the expert outputs in
  // the dispatch layout; topk_idx/topk_weights as given to that dispatch.
  // Returns [T,H] in y's dtype: for each token, the sum over its valid top-k
  // entries, in k order with f32 accumulation, of weight * expert output.
  LowLatencyCombineResult low_latency_combine(const Tensor& y, const Tensor& topk_idx,
                                              const Tensor& topk_weights,
                                              const LowLatencyHandle& handle,
                                              const LowLatencyOptions& options = {});

  // Bytes of buffer one rank needs for a low-latency Buffer of this shape.
  static std::size_t low_latency_size_hint(int max_tokens_per_rank, int hidden, int num_ranks,
                                           int num_experts);

  Group& group() noexcept;
  // Name of the transport that reaches `peer` (for logs and benchmarks).
  const char* transport_name(int peer) const;
  // Bytes of receive space this rank holds now (grows past num_bytes if needed).
  std::size_t capacity_bytes() const;
  // Payload bytes this rank has sent to ranks of other nodes since the Buffer
  // was built, counted by the sender: rows, scales, top-k and forwarding
  // headers of every call (low-latency ones too), not the small control
  // messages. In a hierarchical combine the partial sums for a token are
  // sent by the ranks that forwarded it, so they count there.
  std::uint64_t internode_bytes() const;

  struct Impl;  // opaque

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace epx::comm
