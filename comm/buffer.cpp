// Buffer construction, the shared reserve() step, and get_dispatch_layout.
#include <atomic>

#include "comm/buffer_impl.hpp"
#include "comm/validate.hpp"
#include "core/agree.hpp"
#include "core/check.hpp"
#include "core/config.hpp"
#include "core/log.hpp"
#include "kernels/layout.hpp"

namespace epx::comm {

namespace {
std::atomic<std::uint64_t> g_next_buffer_id{1};
constexpr std::size_t kMaxBytes = std::size_t{1} << 48;  // far beyond any machine, and no overflow

void check_low_latency_options(const BufferOptions& o, int ranks) {
  EPX_CHECK(o.max_tokens_per_rank > 0 && o.max_tokens_per_rank <= (1 << 24), InvalidArgument,
            "Buffer: options.max_tokens_per_rank = ", o.max_tokens_per_rank,
            ", expected 1 to 2^24 with low_latency");
  EPX_CHECK(o.hidden > 0 && o.hidden <= (1 << 20), InvalidArgument, "Buffer: options.hidden = ",
            o.hidden, ", expected 1 to 2^20 with low_latency");
  EPX_CHECK(o.num_experts > 0 && o.num_experts % ranks == 0, InvalidArgument,
            "Buffer: options.num_experts = ", o.num_experts,
            ", expected a positive multiple of the group size ", ranks, " with low_latency");
  // Estimated in floating point first: the exact sizes would overflow for absurd shapes.
  const double need = 2.0 * 8.0 * double(o.num_experts) * o.max_tokens_per_rank * o.hidden;
  EPX_CHECK(need <= double(kMaxBytes), InvalidArgument, "Buffer: low-latency buffers of about ",
            need, " bytes for max_tokens_per_rank = ", o.max_tokens_per_rank, ", hidden = ",
            o.hidden, ", num_experts = ", o.num_experts, " exceed ", kMaxBytes);
}

// The hierarchical path pairs each rank with the rank of the same local index
// on every other node: nodes must be of one size. (Every rank sees the same
// topology, so every rank reaches the same verdict.)
void check_node_shape(const Group& g) {
  const NodeTopology topo(g);
  if (topo.equal_nodes()) return;
  std::string sizes;
  for (int n = 0, count = 0; n < g.num_nodes(); ++n, count = 0) {
    for (int r = 0; r < g.size(); ++r) count += g.node_of(r) == n;
    sizes += core::concat(n ? ", " : "", count);
  }
  EPX_THROW(InvalidArgument, "Buffer: the group's ", g.num_nodes(),
            " nodes have different numbers of ranks (", sizes,
            "); every node must have the same number (set EPX_RANKS_PER_NODE to a divisor of the ",
            g.size(), " ranks, or launch the same number of ranks on every host)");
}

// Every rank must build the same kind of buffer: compare the shapes' minimum
// and maximum over the ranks (bounded waits, like every agreement).
void agree_on_shapes(const Group& group, const BufferOptions& o, const core::Deadline& deadline) {
  const struct {
    const char* name;
    int value;
  } fields[] = {{"low_latency", o.low_latency ? 1 : 0},
                {"max_tokens_per_rank", o.max_tokens_per_rank},
                {"hidden", o.hidden},
                {"num_experts", o.num_experts}};
  for (const auto& f : fields) {
    const int lo = core::allreduce_int(group.comm(), f.value, MPI_MIN, deadline, "Buffer construction");
    const int hi = core::allreduce_int(group.comm(), f.value, MPI_MAX, deadline, "Buffer construction");
    EPX_CHECK(lo == hi, InvalidArgument, "Buffer: options.", f.name, " = ", f.value,
              " on this rank, but ranks pass values from ", lo, " to ", hi, "; all must agree");
  }
}

}  // namespace

Buffer::Impl::Impl(const Group& g, const BufferOptions& o, double timeout_s)
    : group(g),
      topo(g),
      options(o),
      id(g_next_buffer_id.fetch_add(1)),
      fabric(group, timeout_s),
      control(fabric, timeout_s, topo),
      arena(fabric, o.num_bytes, core::Deadline(timeout_s)) {
  if (o.low_latency) {
    const LowLatencyLayout layout(o.max_tokens_per_rank, o.hidden, group.size(), o.num_experts);
    const transport::RegionId region = fabric.create_region(layout.total, core::Deadline(timeout_s));
    ll = std::make_shared<LowLatencyState>(fabric, layout, region);
  }
}

Buffer::Buffer(Group& group, BufferOptions options) {
  // Bad options on one rank fail every rank here, before any set-up collective.
  double timeout_s = 0;
  const std::string err = validation_error([&] {
    timeout_s = core::resolve_timeout_s(options.timeout_s, "Buffer: options.timeout_s");
    EPX_CHECK(options.num_bytes <= kMaxBytes, InvalidArgument, "Buffer: options.num_bytes = ",
              options.num_bytes, ", expected <= ", kMaxBytes);
    if (options.low_latency) check_low_latency_options(options, group.size());
    check_node_shape(group);
  });
  // A bad timeout must not bound the agreement that reports it (-1 would time
  // out at once and hide the reason): that bound falls back to the default.
  const core::Deadline deadline(core::agreement_timeout_s(options.timeout_s));
  core::agree_on_error(group.comm(), err, ErrorCode::InvalidArgument, deadline,
                       "Buffer construction");
  agree_on_shapes(group, options, deadline);
  impl_ = std::make_unique<Impl>(group, options, timeout_s);
  EPX_LOG(Info, Comm, "buffer ", impl_->id, ": ", options.num_bytes, " bytes of receive space, timeout ",
          impl_->control.timeout_s(), " s, peers via ", impl_->fabric.name(0));
}

Buffer::~Buffer() {
  if (impl_ && impl_->ll) impl_->ll->buffer_alive = false;
}

Group& Buffer::group() noexcept { return impl_->group; }
const char* Buffer::transport_name(int peer) const {
  EPX_CHECK(peer >= 0 && peer < impl_->group.size(), InvalidArgument, "Buffer::transport_name: peer = ",
            peer, ", expected 0 <= peer < ", impl_->group.size());
  return impl_->fabric.name(peer);
}
std::size_t Buffer::capacity_bytes() const { return impl_->arena.capacity(); }
std::uint64_t Buffer::internode_bytes() const { return impl_->fabric.internode_bytes(); }

std::int64_t Handle::num_tokens() const {
  EPX_CHECK(state_, InvalidArgument, "Handle::num_tokens: undefined handle");
  return state_->num_tokens;
}
std::int64_t Handle::num_recv_tokens() const {
  EPX_CHECK(state_, InvalidArgument, "Handle::num_recv_tokens: undefined handle");
  return state_->num_recv();
}

Buffer::Impl::Reserved Buffer::Impl::reserve(
    Round round, std::size_t need, std::vector<Message> out, const std::string& own_error,
    const core::Deadline& deadline, const std::function<void(const std::vector<Message>&)>& check) {
  const int R = group.size();
  std::optional<Arena::Block> block;
  if (own_error.empty()) block = arena.try_allocate(need);
  const bool grow = own_error.empty() && !block;
  for (int p = 0; p < R; ++p) {
    out[p].block.region = block ? block->region : -1;
    out[p].block.offset = block ? static_cast<std::int64_t>(block->offset) : 0;
    out[p].block.grow = grow;
    if (!own_error.empty()) {
      out[p].failed = 1;
      Control::set_text(out[p], own_error);
    }
  }
  Reserved r;
  r.in = control.exchange(round, out, deadline);
  control.agree(r.in, own_error);
  if (check) check(r.in);

  std::vector<int> growers;
  for (int p = 0; p < R; ++p)
    if (r.in[p].block.grow) growers.push_back(p);
  if (!growers.empty()) {
    // Every rank saw the same flags, so every rank takes part in the growth.
    arena.grow(grow ? need : 0, deadline);
    std::vector<int> to;
    if (grow) {
      block = arena.try_allocate(need);
      EPX_CHECK(block, Internal, op_name(control.op()), ": no block of ", need, " bytes after growth");
      for (int p = 0; p < R; ++p) {
        out[p].block.region = block->region;
        out[p].block.offset = static_cast<std::int64_t>(block->offset);
        to.push_back(p);
      }
    }
    std::vector<Message> again = control.exchange_some(Round::Regrow, out, to, growers, deadline);
    for (int p : growers) r.in[p] = again[p];
  }
  r.block = std::move(*block);
  return r;
}

Layout Buffer::get_dispatch_layout(const Tensor& topk_idx, int num_experts) {
  Impl& I = *impl_;
  return I.guarded([&]() -> Layout {
    I.control.begin(Op::Layout);
    const core::Deadline deadline = I.deadline();
    const int R = I.group.size();
    const char* op = "get_dispatch_layout";
    const std::string err = validation_error([&] {
      check_tensor(topk_idx, op, "topk_idx", {DType::i64}, 2);
      EPX_CHECK(num_experts > 0 && num_experts % R == 0, InvalidArgument, op, ": num_experts = ",
                num_experts, ", expected a positive multiple of the group size ", R);
      check_topk_ids(topk_idx, num_experts, op);
    });
    // Agree on validity before returning, so that no rank goes on alone.
    std::vector<Message> out(R, I.control.stamp());
    if (!err.empty())
      for (auto& m : out) m.failed = 1, Control::set_text(m, err);
    I.control.agree(I.control.exchange(Round::Request, out, deadline), err);

    const std::int64_t T = topk_idx.dim(0);
    std::vector<int> node_of(R);
    for (int r = 0; r < R; ++r) node_of[r] = I.group.node_of(r);
    Layout layout;
    layout.num_tokens_per_rank = Tensor::empty({R}, DType::i32);
    layout.num_tokens_per_node = Tensor::empty({I.group.num_nodes()}, DType::i32);
    layout.num_tokens_per_expert = Tensor::empty({num_experts}, DType::i32);
    layout.is_token_in_rank = Tensor::empty({T, R}, DType::boolean);
    kernels::LayoutArgs args;
    args.topk_idx = topk_idx.data<std::int64_t>();
    args.num_tokens = T;
    args.num_topk = static_cast<int>(topk_idx.dim(1));
    args.num_experts = num_experts;
    args.num_ranks = R;
    args.node_of_rank = node_of.data();
    args.num_nodes = I.group.num_nodes();
    args.tokens_per_rank = layout.num_tokens_per_rank.data<std::int32_t>();
    args.tokens_per_node = layout.num_tokens_per_node.data<std::int32_t>();
    args.tokens_per_expert = layout.num_tokens_per_expert.data<std::int32_t>();
    args.token_in_rank = layout.is_token_in_rank.data<bool>();
    kernels::compute_dispatch_layout(args);
    layout.num_experts = num_experts;
    layout.topk_fingerprint = fingerprint(topk_idx);
    return layout;
  });
}

}  // namespace epx::comm
