// Executor: runs a validated Schedule on an MPI group. Each rank walks its op
// list in order; activations go forward and gradients backward as
// non-blocking messages whose receives are posted a bounded window ahead;
// a failure anywhere becomes an error on every rank (never a hang).
#include <algorithm>
#include <cstddef>
#include <exception>
#include <functional>
#include <limits>
#include <map>
#include <utility>

#include "core/agree.hpp"
#include "core/check.hpp"
#include "core/config.hpp"
#include "core/log.hpp"
#include "core/stopwatch.hpp"
#include "pipeline/channel.hpp"
#include "pipeline/replay.hpp"

namespace epx::pipeline {

struct Executor::Impl {
  Schedule schedule;
  Stage& stage;
  ExecutorOptions options;
  MPI_Comm comm = MPI_COMM_NULL;  // private duplicate: tags never meet other traffic
  int rank = 0;
  std::string tag;  // "[rank r/R]"
  bool failed = false;
  std::unique_ptr<detail::Channel> channel;
  ExecutorStats stats;

  // This rank's receives from other ranks, in the order its ops consume
  // them (an FB unit: the forward's input, then the backward's), and for
  // each op the number of receives consumed up to and including it.
  struct Expected {
    int tag;
    int from;
  };
  std::vector<Expected> expected;
  std::vector<std::size_t> consumed_through;  // [op]
  std::size_t next_to_post = 0;

  Impl(Schedule s, Stage& st, ExecutorOptions o)
      : schedule(std::move(s)), stage(st), options(std::move(o)) {}
  ~Impl() {
    stage.progress_ = nullptr;
    channel.reset();
    if (comm != MPI_COMM_NULL) MPI_Comm_free(&comm);
  }

  Location where(int mb, int stage_index) const {
    return schedule.paths[schedule.path_of[mb]][stage_index];
  }
  int stage_of(int chunk) const { return schedule.stage_of[rank][chunk]; }
  int last_stage() const { return schedule.stages - 1; }

  // Message tags: one per (micro-batch, producing stage, direction), from 1;
  // the pair-sum tags follow the last message tag.
  int message_tag(int mb, int from_stage, bool gradient) const {
    return 1 + (mb * schedule.stages + from_stage) * 2 + (gradient ? 1 : 0);
  }
  int pair_tag(int stage_index, int k) const {
    return 1 + 2 * schedule.microbatches * schedule.stages + stage_index * kMaxGradTensors + k;
  }
  static constexpr int kMaxGradTensors = 256;

  Tensor activation() const { return Tensor::empty(options.activation_shape, options.dtype); }

  void plan_receives();
  void post_ahead(std::size_t op_index);
  std::vector<double> run_ops(const std::vector<Tensor>& inputs, const std::vector<Tensor>& labels,
                              const LossFn& loss);
  Tensor forward(const detail::Piece& p, const std::vector<Tensor>& inputs);
  void after_forward(const detail::Piece& p, Tensor output, const std::vector<Tensor>& labels,
                     const LossFn& loss, std::vector<double>& losses);
  Tensor grad_output(const detail::Piece& p);
  void after_backward(const detail::Piece& p, Tensor grad_input);
  // DualPipe's pair sum, chunk by chunk: a chunk's exchange is posted as
  // soon as its last backward op ran (its gradients are final then), so
  // that it moves while the step's remaining ops run.
  struct Copy {
    int stage;
    std::vector<Tensor> grads;
  };
  std::vector<int> partner_of;             // [chunk]: the rank of the stage's other copy, or -1
  std::vector<std::size_t> last_backward;  // [chunk]: the last op with a backward piece of it
  static constexpr std::size_t kNoOp = static_cast<std::size_t>(-1);
  std::vector<Copy> copies;  // this step's posted exchanges
  int pair_receives = 0;     // their receives (outside the receive window)
  bool has_copies() const {  // some local chunk has a partner
    return std::any_of(partner_of.begin(), partner_of.end(), [](int r) { return r >= 0; });
  }
  void plan_copies();
  void post_copy_sum(int chunk);
  void sum_weight_copies();

  // Messages between two chunks of this rank (DualPipeV's turn) skip MPI.
  std::map<int, Tensor> local;
  std::map<int, Tensor> loss_grads;  // [mb] gradient of the loss, for the last stage's backward
};

Executor::Executor(Group& pp_group, Schedule schedule, Stage& stage, ExecutorOptions options)
    : impl_(std::make_unique<Impl>(std::move(schedule), stage, std::move(options))) {
  Impl& s = *impl_;
  const double requested_timeout_s = s.options.timeout_s;
  s.rank = pp_group.rank();
  s.tag = pp_group.tag();
  // Checked on every rank and agreed before the collective dup, so that one
  // rank's bad arguments fail every rank instead of leaving them waiting.
  std::string bad;
  try {
    s.options.timeout_s =
        core::resolve_timeout_s(requested_timeout_s, "pipeline Executor: options.timeout_s");
    validate(s.schedule);
    EPX_CHECK_EQ(pp_group.size(), s.schedule.ranks, InvalidArgument,
                 "pipeline Executor: the group's size must be the schedule's rank count");
    EPX_CHECK(!s.options.activation_shape.empty(), InvalidArgument,
              "pipeline Executor: options.activation_shape is empty; give the shape of the "
              "activations and gradients between stages");
    EPX_CHECK(s.options.receive_window >= 1, InvalidArgument,
              "pipeline Executor: options.receive_window = ", s.options.receive_window,
              ", expected >= 1");
    int* tag_ub = nullptr;
    int has = 0;
    MPI_Comm_get_attr(pp_group.comm(), MPI_TAG_UB, &tag_ub, &has);
    // The standard attaches MPI_TAG_UB to MPI_COMM_WORLD; communicators made
    // by MPI_Comm_split need not carry it (Open MPI's do not), and the bound
    // is the same for every communicator.
    if (!has) MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_TAG_UB, &tag_ub, &has);
    const long long need = 1 + 2LL * s.schedule.microbatches * s.schedule.stages +
                           static_cast<long long>(s.schedule.stages) * Impl::kMaxGradTensors;
    EPX_CHECK(has && need <= *tag_ub, InvalidArgument,
              "pipeline Executor: ", s.schedule.microbatches, " micro-batches x ",
              s.schedule.stages, " stages need MPI tags up to ", need,
              ", beyond MPI_TAG_UB = ", has ? *tag_ub : 0);
  } catch (const Error& e) {
    bad = e.what();
  }
  // Bounded by a valid timeout even when the given one is the bad input.
  core::agree_on_error(pp_group.comm(), bad, ErrorCode::InvalidArgument,
                       core::Deadline(core::agreement_timeout_s(requested_timeout_s)),
                       "pipeline Executor");
  // Receive buffers are sized from the options: ranks that disagree would
  // truncate messages (an MPI error that aborts), so compare them first.
  const std::string format =
      Tensor::empty(s.options.activation_shape, s.options.dtype).describe();
  const int digest = static_cast<int>(std::hash<std::string>{}(format) & 0x3fffffff);
  const core::Deadline deadline(s.options.timeout_s);
  const int lo = core::allreduce_int(pp_group.comm(), digest, MPI_MIN, deadline, "pipeline Executor");
  const int hi = core::allreduce_int(pp_group.comm(), digest, MPI_MAX, deadline, "pipeline Executor");
  EPX_CHECK(lo == hi, InvalidArgument, "pipeline Executor: options.activation_shape and dtype "
            "differ across the ranks (here ", format, "); every rank must give the same");
  MPI_Comm_dup(pp_group.comm(), &s.comm);
  s.channel = std::make_unique<detail::Channel>(s.comm, s.options.timeout_s, pp_group);
  s.plan_receives();
  s.plan_copies();
  stage.progress_ = [channel = s.channel.get()] { channel->progress(); };
  EPX_LOG(Info, Pipeline, "executor: ", to_string(s.schedule.kind), " on ", s.schedule.ranks,
          " ranks, ", s.schedule.microbatches, " micro-batches, ", s.schedule.stages, " stages; ",
          s.schedule.ops[static_cast<std::size_t>(s.rank)].size(), " ops here, receive window ",
          s.options.receive_window, ", timeout ", s.options.timeout_s, " s");
}

Executor::~Executor() = default;

const Schedule& Executor::schedule() const noexcept {
  return impl_->schedule;
}

const ExecutorStats& Executor::last_step_stats() const noexcept {
  return impl_->stats;
}

void Executor::Impl::plan_receives() {
  for (const Op& op : schedule.ops[rank]) {
    detail::Piece pieces[2];
    const int n = detail::pieces_of(op, pieces);
    for (int i = 0; i < n; ++i) {
      const detail::Piece& p = pieces[i];
      const int s = stage_of(p.chunk);
      if (p.kind == OpKind::F && s > 0) {
        const Location from = where(p.mb, s - 1);
        if (from.rank != rank) expected.push_back({message_tag(p.mb, s - 1, false), from.rank});
      }
      if ((p.kind == OpKind::B || p.kind == OpKind::Bi) && s < last_stage()) {
        const Location from = where(p.mb, s + 1);
        if (from.rank != rank) expected.push_back({message_tag(p.mb, s + 1, true), from.rank});
      }
    }
    consumed_through.push_back(expected.size());
  }
}

// Before op `op_index` waits for anything: its own receives, then later ones
// in schedule order while fewer than receive_window are outstanding. Waits
// run in the same order, so each one finds its receive posted; sends never
// block, so holding receives back cannot stall a peer.
void Executor::Impl::post_ahead(std::size_t op_index) {
  const std::size_t consumed = op_index == 0 ? 0 : consumed_through[op_index - 1];
  const std::size_t window = static_cast<std::size_t>(options.receive_window);
  while (next_to_post < expected.size() &&
         (next_to_post < consumed_through[op_index] || next_to_post - consumed < window)) {
    const Expected& e = expected[next_to_post++];
    channel->post_recv(e.tag, e.from, activation());
  }
  stats.peak_posted_receives =
      std::max(stats.peak_posted_receives, channel->posted_receives() - pair_receives);
}

Tensor Executor::Impl::forward(const detail::Piece& p, const std::vector<Tensor>& inputs) {
  const int s = stage_of(p.chunk);
  Tensor x;
  if (s == 0) {
    x = inputs[p.mb];
  } else if (where(p.mb, s - 1).rank == rank) {
    x = std::move(local.at(message_tag(p.mb, s - 1, false)));
    local.erase(message_tag(p.mb, s - 1, false));
  } else {
    x = channel->wait_recv(message_tag(p.mb, s - 1, false),
                           core::concat("activation of micro-batch ", p.mb, " stage ", s - 1));
  }
  return x;
}

void Executor::Impl::after_forward(const detail::Piece& p, Tensor output,
                                   const std::vector<Tensor>& labels, const LossFn& loss,
                                   std::vector<double>& losses) {
  const int s = stage_of(p.chunk);
  if (s == last_stage()) {
    Tensor grad = Tensor::empty(output.shape(), output.dtype());
    losses[p.mb] = loss(p.mb, output, labels[p.mb], grad);
    loss_grads[p.mb] = std::move(grad);
    return;
  }
  EPX_CHECK(output.shape() == options.activation_shape && output.dtype() == options.dtype,
            InvalidArgument, "pipeline Executor: stage ", s, " forward of micro-batch ", p.mb,
            " returned ", output.describe(), ", expected the activation shape of the options");
  const Location to = where(p.mb, s + 1);
  if (to.rank == rank) {
    local[message_tag(p.mb, s, false)] = std::move(output);
  } else {
    channel->send(message_tag(p.mb, s, false), to.rank, std::move(output));
  }
}

Tensor Executor::Impl::grad_output(const detail::Piece& p) {
  const int s = stage_of(p.chunk);
  if (s == last_stage()) {
    Tensor g = std::move(loss_grads.at(p.mb));
    loss_grads.erase(p.mb);
    return g;
  }
  const int key = message_tag(p.mb, s + 1, true);
  if (where(p.mb, s + 1).rank == rank) {
    Tensor g = std::move(local.at(key));
    local.erase(key);
    return g;
  }
  return channel->wait_recv(key, core::concat("gradient of micro-batch ", p.mb, " stage ", s + 1));
}

void Executor::Impl::after_backward(const detail::Piece& p, Tensor grad_input) {
  const int s = stage_of(p.chunk);
  if (s == 0) return;
  EPX_CHECK(grad_input.shape() == options.activation_shape && grad_input.dtype() == options.dtype,
            InvalidArgument, "pipeline Executor: stage ", s, " backward of micro-batch ", p.mb,
            " returned ", grad_input.describe(), ", expected the activation shape of the options");
  const Location to = where(p.mb, s - 1);
  if (to.rank == rank) {
    local[message_tag(p.mb, s, true)] = std::move(grad_input);
  } else {
    channel->send(message_tag(p.mb, s, true), to.rank, std::move(grad_input));
  }
}

std::vector<double> Executor::Impl::run_ops(const std::vector<Tensor>& inputs,
                                            const std::vector<Tensor>& labels, const LossFn& loss) {
  std::vector<double> losses(schedule.microbatches, std::numeric_limits<double>::quiet_NaN());
  next_to_post = 0;
  copies.clear();
  pair_receives = 0;
  const std::vector<Op>& ops = schedule.ops[rank];
  for (std::size_t i = 0; i < ops.size(); ++i) {
    const Op& op = ops[i];
    EPX_LOG(Trace, Pipeline, "step: op ", i, " of ", ops.size(), ": ", to_string(op));
    post_ahead(i);
    switch (op.kind) {
      case OpKind::F: {
        const detail::Piece p{OpKind::F, op.mb, op.chunk};
        Tensor y = stage.forward(op.chunk, op.mb, forward(p, inputs));
        after_forward(p, std::move(y), labels, loss, losses);
        break;
      }
      case OpKind::B:
      case OpKind::Bi: {
        const detail::Piece p{op.kind, op.mb, op.chunk};
        Tensor g = grad_output(p);
        Tensor gx = op.kind == OpKind::B ? stage.backward(op.chunk, op.mb, g)
                                         : stage.backward_input(op.chunk, op.mb, g);
        after_backward(p, std::move(gx));
        break;
      }
      case OpKind::W:
        stage.backward_weight(op.chunk, op.mb);
        break;
      case OpKind::FB: {
        const detail::Piece f{OpKind::F, op.mb, op.chunk};
        const detail::Piece b{OpKind::B, op.b_mb, op.b_chunk};
        Tensor x = forward(f, inputs);
        Tensor g = grad_output(b);
        Tensor gx;
        Tensor y = stage.forward_backward(op.chunk, op.mb, x, op.b_chunk, op.b_mb, g, gx);
        after_forward(f, std::move(y), labels, loss, losses);
        after_backward(b, std::move(gx));
        break;
      }
    }
    for (int chunk = 0; chunk < schedule.chunks_per_rank; ++chunk)
      if (last_backward[static_cast<std::size_t>(chunk)] == i) post_copy_sum(chunk);
    stats.peak_pending_sends = std::max(stats.peak_pending_sends, channel->pending_sends());
    channel->release_sent();
  }
  return losses;
}

namespace {
template <class T>
void add_into(Tensor& mine, const Tensor& theirs) {
  T* a = mine.data<T>();
  const T* b = theirs.data<T>();
  for (std::int64_t i = 0; i < mine.numel(); ++i) a[i] += b[i];
}
}  // namespace

// DualPipe keeps two copies of each stage, on two ranks: the partner of
// each local chunk, and the op after which its gradients are final.
void Executor::Impl::plan_copies() {
  partner_of.assign(static_cast<std::size_t>(schedule.chunks_per_rank), -1);
  last_backward.assign(partner_of.size(), kNoOp);
  for (int chunk = 0; chunk < schedule.chunks_per_rank; ++chunk) {
    const int s = stage_of(chunk);
    for (int r = 0; r < schedule.ranks; ++r)
      for (int c = 0; c < schedule.chunks_per_rank; ++c)
        if (schedule.stage_of[r][c] == s && !(r == rank && c == chunk)) partner_of[chunk] = r;
    EPX_CHECK(partner_of[chunk] != rank, Unsupported, "pipeline Executor: two copies of stage ", s,
              " on one rank");
  }
  const std::vector<Op>& ops = schedule.ops[rank];
  for (std::size_t i = 0; i < ops.size(); ++i) {
    detail::Piece pieces[2];
    const int n = detail::pieces_of(ops[i], pieces);
    for (int k = 0; k < n; ++k)
      if (pieces[k].kind != OpKind::F) last_backward[static_cast<std::size_t>(pieces[k].chunk)] = i;
  }
}

void Executor::Impl::post_copy_sum(int chunk) {
  const int partner = partner_of[static_cast<std::size_t>(chunk)];
  if (partner < 0) return;
  const int s = stage_of(chunk);
  Copy copy{s, stage.weight_grads(chunk)};
  EPX_CHECK(static_cast<int>(copy.grads.size()) <= kMaxGradTensors, InvalidArgument,
            "pipeline Executor: stage ", s, " has ", copy.grads.size(),
            " weight-grad tensors, at most ", kMaxGradTensors);
  for (std::size_t k = 0; k < copy.grads.size(); ++k) {
    const Tensor& g = copy.grads[k];
    EPX_CHECK(g.dtype() == DType::f32 || g.dtype() == DType::f64, Unsupported,
              "pipeline Executor: weight grad ", k, " of stage ", s, " is ", g.describe(),
              "; the pair sum needs f32 or f64");
    const int tag = pair_tag(s, static_cast<int>(k));
    channel->post_recv(tag, partner, Tensor::empty(g.shape(), g.dtype()));
    ++pair_receives;
    channel->send(tag, partner, g.clone());
  }
  copies.push_back(std::move(copy));
}

// Each copy saw half the micro-batches; both ranks of a pair end with the
// sum (a + b == b + a in IEEE arithmetic, so the two copies stay
// bit-identical). Every exchange was posted before any wait (the partner
// posts its chunks in its own order, so waiting chunk by chunk could wait in
// a cycle).
void Executor::Impl::sum_weight_copies() {
  for (int chunk = 0; chunk < schedule.chunks_per_rank; ++chunk)
    if (last_backward[static_cast<std::size_t>(chunk)] == kNoOp) post_copy_sum(chunk);
  for (Copy& copy : copies) {
    for (std::size_t k = 0; k < copy.grads.size(); ++k) {
      const Tensor other = channel->wait_recv(
          pair_tag(copy.stage, static_cast<int>(k)),
          core::concat("weight grad ", k, " of stage ", copy.stage, " from its other copy"));
      if (other.dtype() == DType::f64) {
        add_into<double>(copy.grads[k], other);
      } else {
        add_into<float>(copy.grads[k], other);
      }
    }
  }
  copies.clear();
  pair_receives = 0;
}

std::vector<double> Executor::step(const std::vector<Tensor>& inputs,
                                   const std::vector<Tensor>& labels, const LossFn& loss) {
  Impl& s = *impl_;
  EPX_CHECK(!s.failed, PeerFailure, "pipeline Executor: a previous step failed; build a new one");
  const auto t_enter = core::SteadyClock::now();
  const auto ms_since = [](core::SteadyClock::time_point t) {
    return 1e3 * core::seconds_since(t);
  };
  const core::Deadline agree_deadline(s.options.timeout_s);
  // Input checks, agreed before any message moves.
  std::string bad;
  const int m = s.schedule.microbatches;
  if (static_cast<int>(inputs.size()) != m || static_cast<int>(labels.size()) != m) {
    bad = core::concat(s.tag, " pipeline step: ", inputs.size(), " inputs and ", labels.size(),
                       " labels, expected ", m, " of each");
  }
  for (int mb = 0; bad.empty() && mb < m; ++mb) {
    if (s.where(mb, 0).rank == s.rank && !inputs[mb].defined())
      bad = core::concat(s.tag, " pipeline step: inputs[", mb, "] is empty on the rank of stage 0");
    if (s.where(mb, s.last_stage()).rank == s.rank && !labels[mb].defined())
      bad = core::concat(s.tag, " pipeline step: labels[", mb,
                         "] is empty on the rank of the last stage");
  }
  core::agree_on_error(s.comm, bad, ErrorCode::InvalidArgument, agree_deadline, "pipeline step");

  std::vector<double> losses;
  std::exception_ptr own;
  s.stats = {};
  auto t_close = core::SteadyClock::now();
  try {
    s.channel->check_group("pipeline step");  // also where no op waits (one rank)
    s.stats.agree_ms = ms_since(t_enter);
    const auto t_ops = core::SteadyClock::now();
    losses = s.run_ops(inputs, labels, loss);
    s.stats.ops_ms = ms_since(t_ops);
    const auto t_sum = core::SteadyClock::now();
    s.sum_weight_copies();
    if (s.has_copies()) s.stats.copy_sum_ms = ms_since(t_sum);
    t_close = core::SteadyClock::now();
    s.channel->wait_sends("pipeline step: sends");
  } catch (...) {
    s.failed = true;
    if (!s.channel->peer_failed()) {
      // This rank's own failure: abort the group, the one failure channel,
      // so that every rank's waits end, here and in the other modules on it.
      own = std::current_exception();
      std::string what = "an exception that is not a std::exception";
      try {
        throw;
      } catch (const std::exception& e) {
        what = e.what();
      } catch (...) {
      }
      s.channel->group().abort(core::concat("pipeline step: rank ", s.rank, " failed: ", what));
    }
  }
  s.local.clear();
  s.loss_grads.clear();
  // Every rank arrives here, failed or not, and learns who failed. If the
  // agreement itself times out (a stalled peer may not arrive in time), a rank
  // reports what it knows best: its own error, else the group's abort reason.
  int failed_rank = -1;
  try {
    failed_rank = core::allreduce_int(s.comm, own ? s.rank : -1, MPI_MAX,
                                      core::Deadline(s.options.timeout_s), "pipeline step");
  } catch (const Error&) {
    s.failed = true;
    if (!own && !s.channel->peer_failed()) throw;
    if (!own) EPX_THROW(PeerFailure, "pipeline step: ", s.channel->group().abort_reason());
  }
  // The executor is failed now (s.failed): the error says so.
  if (own) core::rethrow_poisoned(own);
  if (failed_rank >= 0 || s.failed) {
    s.failed = true;
    EPX_THROW(PeerFailure, "pipeline step: rank ", failed_rank, " failed (see its error)");
  }
  s.stats.close_ms = ms_since(t_close);
  return losses;
}

}  // namespace epx::pipeline
