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

double effective_timeout(const BufferOptions& o) {
  // The struct's default leaves the choice to EPX_TIMEOUT_S.
  const bool from_env = o.timeout_s == BufferOptions{}.timeout_s;
  const double t = from_env ? core::params::timeout_s.get() : o.timeout_s;
  EPX_CHECK(t > 0, InvalidArgument, "Buffer: ", from_env ? "EPX_TIMEOUT_S" : "options.timeout_s",
            " = ", t, ", expected > 0 seconds (inf or >= 1e9: no limit)");
  return t;
}
}  // namespace

Buffer::Impl::Impl(const Group& g, const BufferOptions& o, double timeout_s)
    : group(g),
      options(o),
      id(g_next_buffer_id.fetch_add(1)),
      fabric(group, timeout_s),
      control(fabric, timeout_s),
      arena(fabric, o.num_bytes, core::Deadline(timeout_s)) {}

Buffer::Buffer(Group& group, BufferOptions options) {
  // Bad options on one rank fail every rank here, before any set-up collective.
  double timeout_s = 0;
  const std::string err = validation_error([&] {
    timeout_s = effective_timeout(options);
    EPX_CHECK(options.num_bytes <= kMaxBytes, InvalidArgument, "Buffer: options.num_bytes = ",
              options.num_bytes, ", expected <= ", kMaxBytes);
  });
  core::agree_on_error(group.comm(), err, ErrorCode::InvalidArgument,
                       core::Deadline(timeout_s > 0 ? timeout_s : core::params::timeout_s.get()),
                       "Buffer construction");
  impl_ = std::make_unique<Impl>(group, options, timeout_s);
  EPX_LOG(Info, Comm, "buffer ", impl_->id, ": ", options.num_bytes, " bytes of receive space, timeout ",
          impl_->control.timeout_s(), " s, peers via ", impl_->fabric.name(0));
}

Buffer::~Buffer() = default;

Group& Buffer::group() noexcept { return impl_->group; }
const char* Buffer::transport_name(int peer) const {
  EPX_CHECK(peer >= 0 && peer < impl_->group.size(), InvalidArgument, "Buffer::transport_name: peer = ",
            peer, ", expected 0 <= peer < ", impl_->group.size());
  return impl_->fabric.name(peer);
}
std::size_t Buffer::capacity_bytes() const { return impl_->arena.capacity(); }

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
    out[p].v[kMsgRegion] = block ? block->region : -1;
    out[p].v[kMsgOffset] = block ? static_cast<std::int64_t>(block->offset) : 0;
    out[p].v[kMsgGrow] = grow;
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
    if (r.in[p].v[kMsgGrow]) growers.push_back(p);
  if (!growers.empty()) {
    // Every rank saw the same flags, so every rank takes part in the growth.
    arena.grow(grow ? need : 0, deadline);
    std::vector<int> to;
    if (grow) {
      block = arena.try_allocate(need);
      EPX_CHECK(block, Internal, op_name(control.op()), ": no block of ", need, " bytes after growth");
      for (int p = 0; p < R; ++p) {
        out[p].v[kMsgRegion] = block->region;
        out[p].v[kMsgOffset] = static_cast<std::int64_t>(block->offset);
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
