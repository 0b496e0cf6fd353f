#include "serve/engine.hpp"

#include <algorithm>

#include "core/check.hpp"
#include "core/log.hpp"

namespace epx::serve {

namespace {

// Receive space for one MoE layer of the largest step: every token of a
// rank to every rank, as the dispatched row [H] plus combine's K blocks of H.
std::size_t buffer_bytes(const model::ModelConfig& c, const EngineOptions& o, int ranks) {
  const std::size_t tokens = static_cast<std::size_t>(o.prefill_chunk) * std::min(o.max_batch, 8);
  const std::size_t cols = static_cast<std::size_t>(c.hidden_size) * (1 + c.top_k) + 2 * c.top_k;
  return std::max<std::size_t>(std::size_t{8} << 20, 2 * tokens * ranks * cols * sizeof(float));
}

}  // namespace

Engine::Engine(model::Model& model, Group& world, const EngineOptions& options)
    : model_(model),
      options_(options),
      rank_(world.rank()),
      size_(world.size()),
      control_(world.comm(), options.timeout_s) {
  const model::ModelConfig& c = model.config();
  std::string error;
  try {
    EPX_CHECK(options.max_batch >= 1 && options.max_queue >= 0 && options.block_size >= 1 &&
                  options.max_context >= 1 && options.prefill_chunk >= 1,
              InvalidArgument, "serve: max_batch ", options.max_batch, ", max_queue ",
              options.max_queue, ", block_size ", options.block_size, ", max_context ",
              options.max_context, ", prefill_chunk ", options.prefill_chunk,
              ": expected >= 1 (max_queue >= 0)");
    EPX_CHECK(!options.fp8_dispatch || c.hidden_size % 128 == 0, InvalidArgument,
              "serve: fp8 dispatch needs model.hidden_size a multiple of 128 (its 1x128 scale "
              "blocks), got ",
              c.hidden_size);
    cache_ = std::make_unique<KvCache>(c.num_layers, c.hidden_size, options.block_size,
                                       options.kv_bytes);
    const std::int64_t need = KvCache::blocks_for(options.max_context, options.block_size);
    EPX_CHECK(need <= cache_->num_blocks(), InvalidArgument, "serve: --kv-memory ",
              options.kv_bytes >> 20, " MiB holds ", cache_->num_blocks(), " blocks of ",
              options.block_size, " positions (", cache_->block_bytes(),
              " bytes each), fewer than the ", need, " that one request of --max-context ",
              options.max_context, " needs");
  } catch (const std::exception& e) {
    error = e.what();
  }
  control_.agree(error, "epx-serve: checking the engine options");
  comm::BufferOptions bo;
  bo.num_bytes = buffer_bytes(c, options, size_);
  bo.timeout_s = options.timeout_s;
  if (options.low_latency_decode || options.auto_decode) {
    // A decode step has at most one token per running sequence, max_batch in all.
    bo.low_latency = true;
    bo.max_tokens_per_rank = options.max_batch;
    bo.hidden = c.hidden_size;
    bo.num_experts = model.ep_size() * model.local_experts();  // physical slots
  }
  buffer_ = std::make_unique<comm::Buffer>(world, bo);
  if (options.auto_decode) {
    model::ModelConfig served = c;  // the shape the dispatch sees: one expert per slot
    served.num_experts = static_cast<int>(bo.num_experts);
    choice_ =
        choose_decode_modes(*buffer_, control_, served, options.max_batch, options.fp8_dispatch);
  }
  forward_ = std::make_unique<Forward>(model, *buffer_, *cache_, options.deterministic,
                                       options.fp8_dispatch);
  if (options.balancer)
    forward_->set_placement(&options.balancer->placement(), options.balancer->num_nodes());
  if (rank_ == 0) {
    metrics_ = std::make_unique<Metrics>(size_, model.num_moe_layers(), c.num_experts,
                                         cache_->num_blocks());
    metrics_->set_fp8_dispatch(options.fp8_dispatch);
    SchedulerOptions so;
    so.num_ranks = size_;
    so.blocks_per_rank = cache_->num_blocks();
    so.block_size = options.block_size;
    so.max_batch = options.max_batch;
    so.max_queue = options.max_queue;
    so.prefill_chunk = options.prefill_chunk;
    so.vocab_size = c.vocab_size;
    scheduler_ = std::make_unique<Scheduler>(so, *metrics_);
  }
}

Engine::~Engine() = default;

void Engine::run() {
  try {
    // After a plan with nothing in it rank 0 waits up to a heartbeat for
    // work, so the next plan may be that far away.
    bool idle = false;
    for (;;) {
      StepPlan plan;
      std::vector<std::int64_t> message;
      if (rank_ == 0) {
        plan = scheduler_->next_plan(options_.heartbeat);
        message = encode(plan);
      }
      control_.broadcast(message, "waiting for the step plan", idle);
      if (rank_ != 0) plan = decode(message);
      idle = plan.tokens() == 0 && plan.releases.empty();
      for (const Release& r : plan.releases)
        if (r.owner == rank_) cache_->release(r.seq);
      if (plan.shutdown) return;
      if (plan.tokens() > 0) step(plan);
    }
  } catch (const std::exception& e) {
    if (scheduler_) scheduler_->fail_all(e.what());
    throw;
  }
}

void Engine::step(const StepPlan& plan) {
  std::vector<Segment> mine;
  for (const PlannedSegment& s : plan.segments) {
    if (s.owner != rank_) continue;
    if (s.reserve > 0) cache_->add(s.seq, s.reserve);
    mine.push_back({s.seq, s.start, s.tokens.data(), static_cast<std::int64_t>(s.tokens.size()),
                    s.want_logits});
  }
  bool decode = true;
  for (const PlannedSegment& s : plan.segments) decode = decode && s.tokens.size() == 1;
  const bool low_latency =
      decode && (options_.auto_decode ? choice_.low_latency(static_cast<int>(plan.segments.size()))
                                      : options_.low_latency_decode);
  using Overlap = EngineOptions::Overlap;
  const bool overlap =
      low_latency && (options_.overlap_decode == Overlap::on ||
                      (options_.overlap_decode == Overlap::alternate && decode_steps_ % 2 == 0));
  if (decode) ++decode_steps_;
  const auto start = std::chrono::steady_clock::now();
  forward_->run(mine, logits_, low_latency, overlap, plan.tokens());
  // The expert counts ride behind the logits (exact in f32: < 2^24 per step).
  const std::vector<std::int64_t> counts = forward_->take_expert_counts();
  std::vector<float> out = logits_;
  for (const std::int64_t n : counts) out.push_back(static_cast<float>(n));
  const std::int64_t V = model_.config().vocab_size;
  std::vector<int> sizes(static_cast<std::size_t>(size_));
  for (int q = 0; q < size_; ++q)
    sizes[q] = static_cast<int>(plan.logit_rows(q) * V + static_cast<std::int64_t>(counts.size()));
  const std::vector<float> all = control_.gather(out, sizes, "gathering the logits");
  if (options_.balancer) balance(counts);
  if (rank_ != 0) return;
  if (decode)
    metrics_->decode_step(
        overlap       ? "low-latency-overlap"
        : low_latency ? "low-latency"
                      : "normal",
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  std::vector<float> logits;
  std::vector<std::int64_t> total(counts.size(), 0);
  std::size_t at = 0;
  for (int q = 0; q < size_; ++q) {
    const std::size_t rows = static_cast<std::size_t>(plan.logit_rows(q) * V);
    logits.insert(logits.end(), all.begin() + at, all.begin() + at + rows);
    at += rows;
    for (std::size_t i = 0; i < counts.size(); ++i)
      total[i] += static_cast<std::int64_t>(all[at + i]);
    at += counts.size();
  }
  metrics_->expert_tokens(total);
  scheduler_->apply(plan, logits);
}

void Engine::balance(const std::vector<std::int64_t>& counts) {
  train::ExpertBalancer& b = *options_.balancer;
  const int L = model_.num_moe_layers();
  const std::size_t E = static_cast<std::size_t>(model_.config().num_experts);
  std::vector<std::vector<std::int64_t>> per_layer(static_cast<std::size_t>(L));
  for (int l = 0; l < L; ++l)
    per_layer[l].assign(counts.begin() + l * E, counts.begin() + (l + 1) * E);
  b.observe(per_layer);
  ++steps_;
  if (!b.due(steps_)) return;
  // Between two steps: the requests in flight wait for it, none is dropped,
  // and their next tokens are computed on the new placement.
  const train::RebalanceReport r = b.rebalance({&model_}, steps_);
  forward_->set_placement(&b.placement(), b.num_nodes());
  if (rank_ != 0) return;
  const auto worst = [](const std::vector<double>& v) {
    return v.empty() ? 0.0 : *std::max_element(v.begin(), v.end());
  };
  metrics_->rebalanced(r.moved_bytes, worst(r.before), worst(r.after), r.seconds);
  EPX_LOG(Info, Balancer, "epx-serve: rebalance at step ", steps_, ": worst layer max/mean ",
          worst(r.before), " -> ", worst(r.after), " (EPLB from scratch ", worst(r.eplb), "), ",
          r.moved_bytes, " bytes received by rank 0 (", r.naive_bytes, " without slot matching), ",
          1e3 * r.seconds, " ms");
}

}  // namespace epx::serve
