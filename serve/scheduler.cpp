#include "serve/scheduler.hpp"

#include <algorithm>

#include "core/check.hpp"

namespace epx::serve {

namespace {

using Clock = std::chrono::steady_clock;

double seconds(Clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

// Ends `r` (under its lock) and wakes whoever waits on it.
void complete(Request& r, const std::string& reason, const std::string& error = {}) {
  std::lock_guard<std::mutex> l(r.mu);
  if (r.done) return;
  r.done = true;
  r.done_at = Clock::now();
  r.finish_reason = reason;
  r.error = error;
  r.cv.notify_all();
}

}  // namespace

Scheduler::Scheduler(const SchedulerOptions& options, Metrics& metrics)
    : o_(options),
      metrics_(metrics),
      free_blocks_(static_cast<std::size_t>(options.num_ranks), options.blocks_per_rank) {}

std::int64_t Scheduler::blocks_for(const Request& r) const {
  const std::int64_t positions =
      static_cast<std::int64_t>(r.spec.prompt.size()) + r.spec.max_tokens;
  return (positions + o_.block_size - 1) / o_.block_size;
}

std::vector<std::int64_t> Scheduler::blocks_used() const {
  std::vector<std::int64_t> used(free_blocks_.size());
  for (std::size_t q = 0; q < used.size(); ++q) used[q] = o_.blocks_per_rank - free_blocks_[q];
  return used;
}

Admission Scheduler::submit(std::shared_ptr<Request> request) {
  EPX_CHECK(!request->spec.prompt.empty() && request->spec.max_tokens >= 1, InvalidArgument,
            "serve: a request needs a prompt and max_tokens >= 1");
  EPX_CHECK_LE(blocks_for(*request), o_.blocks_per_rank, InvalidArgument,
               "serve: the request's KV blocks");
  std::lock_guard<std::mutex> l(mu_);
  if (draining_ || stop_) return Admission::draining;
  // max_batch may run, max_queue more may wait.
  if (static_cast<int>(queue_.size()) + running_count_ >= o_.max_batch + o_.max_queue)
    return Admission::queue_full;
  queue_.push_back(std::move(request));
  cv_.notify_all();
  return Admission::accepted;
}

void Scheduler::drain() {
  std::lock_guard<std::mutex> l(mu_);
  draining_ = true;
  cv_.notify_all();
}

void Scheduler::stop_now() {
  std::lock_guard<std::mutex> l(mu_);
  draining_ = stop_ = true;
  cv_.notify_all();
}

bool Scheduler::draining() const {
  std::lock_guard<std::mutex> l(mu_);
  return draining_;
}

void Scheduler::finish(Active& a, const std::string& reason) {
  a.finished = true;
  releases_.push_back({a.seq, a.owner});
  free_blocks_[static_cast<std::size_t>(a.owner)] += blocks_for(*a.request);
  metrics_.kv_blocks(blocks_used());  // before the client hears it is done
  std::int64_t generated = 0;
  {
    std::lock_guard<std::mutex> l(a.request->mu);
    generated = static_cast<std::int64_t>(a.request->tokens.size());
  }
  metrics_.request_finished(reason, static_cast<std::int64_t>(a.request->spec.prompt.size()),
                            generated);
  complete(*a.request, reason);
}

// Under mu_.
void Scheduler::admit() {
  while (!queue_.empty() && static_cast<int>(running_.size()) < o_.max_batch) {
    const std::shared_ptr<Request>& r = queue_.front();
    if (r->cancelled) {
      metrics_.request_finished("cancelled", static_cast<std::int64_t>(r->spec.prompt.size()), 0);
      complete(*r, "cancelled");
      queue_.pop_front();
      continue;
    }
    const std::int64_t need = blocks_for(*r);
    int owner = -1;
    for (int q = 0; q < o_.num_ranks; ++q)
      if (free_blocks_[q] >= need && (owner < 0 || free_blocks_[q] > free_blocks_[owner]))
        owner = q;
    if (owner < 0) return;  // the head waits for blocks; the others wait behind it
    free_blocks_[static_cast<std::size_t>(owner)] -= need;
    auto a = std::make_unique<Active>(Active{r, next_seq_++, owner, 0, 0, Rng(r->spec.seed),
                                             CompletionText(r->spec.stop), Clock::now(), false});
    running_.push_back(std::move(a));
    queue_.pop_front();
  }
}

StepPlan Scheduler::next_plan(std::chrono::milliseconds wait) {
  StepPlan plan;
  int waiting = 0;
  {
    std::unique_lock<std::mutex> l(mu_);
    if (queue_.empty() && running_.empty() && releases_.empty() && !draining_)
      cv_.wait_for(l, wait);
    if (stop_) {
      for (const auto& r : queue_) {
        metrics_.request_finished("cancelled", static_cast<std::int64_t>(r->spec.prompt.size()), 0);
        complete(*r, "cancelled");
      }
      queue_.clear();
      for (auto& a : running_) finish(*a, "cancelled");
    }
    for (auto& a : running_)
      if (!a->finished && a->request->cancelled) finish(*a, "cancelled");
    running_.erase(std::remove_if(running_.begin(), running_.end(),
                                  [](const std::unique_ptr<Active>& a) { return a->finished; }),
                   running_.end());
    admit();
    waiting = static_cast<int>(queue_.size());
    running_count_ = static_cast<int>(running_.size());
    plan.shutdown = draining_ && queue_.empty() && running_.empty();
  }
  plan.releases.swap(releases_);
  for (auto& a : running_) {
    const std::vector<std::int32_t>& prompt = a->request->spec.prompt;
    const auto P = static_cast<std::int64_t>(prompt.size());
    PlannedSegment s;
    s.seq = a->seq;
    s.owner = a->owner;
    if (a->prefilled < P) {
      const std::int64_t n = std::min<std::int64_t>(o_.prefill_chunk, P - a->prefilled);
      s.start = a->prefilled;
      s.reserve = a->prefilled == 0 ? P + a->request->spec.max_tokens : 0;
      s.tokens.assign(prompt.begin() + a->prefilled, prompt.begin() + a->prefilled + n);
      a->prefilled += n;
      s.want_logits = a->prefilled == P;
    } else {
      std::lock_guard<std::mutex> l(a->request->mu);
      s.start = P + a->fed;
      s.tokens.push_back(a->request->tokens.back());
      s.want_logits = true;
      ++a->fed;
    }
    plan.segments.push_back(std::move(s));
  }
  metrics_.step(static_cast<int>(plan.segments.size()), plan.tokens(),
                static_cast<int>(running_.size()), waiting, blocks_used());
  return plan;
}

void Scheduler::apply(const StepPlan& plan, const std::vector<float>& logits) {
  const std::int64_t V = o_.vocab_size;
  std::int64_t row = 0;
  for (int q = 0; q < o_.num_ranks; ++q)
    for (const PlannedSegment& s : plan.segments) {
      if (s.owner != q || !s.want_logits) continue;
      const float* l = logits.data() + row++ * V;
      const auto it =
          std::find_if(running_.begin(), running_.end(),
                       [&](const std::unique_ptr<Active>& a) { return a->seq == s.seq; });
      EPX_CHECK(it != running_.end(), Internal, "serve: logits for sequence ", s.seq,
                ", which is not running");
      Active& a = **it;
      const RequestSpec& spec = a.request->spec;
      const std::int32_t tok = sample(l, V, spec.sampling, a.rng);
      const Clock::time_point now = Clock::now();
      bool stop = false;
      if (V == 256) stop = a.text.add(static_cast<std::uint8_t>(tok));
      bool first = false, done = false;
      {
        std::lock_guard<std::mutex> g(a.request->mu);
        first = a.request->tokens.empty();
        if (first) a.request->first_token_at = now;
        a.request->tokens.push_back(tok);
        done = stop || static_cast<int>(a.request->tokens.size()) >= spec.max_tokens;
        if (done && !stop) a.text.finish();
        a.request->text += a.text.take_delta();
        a.request->cv.notify_all();
      }
      if (first) {
        metrics_.first_token(seconds(now - a.request->arrival));
      } else {
        metrics_.next_token(seconds(now - a.last_token));
      }
      a.last_token = now;
      if (done) finish(a, stop ? "stop" : "length");
    }
  EPX_CHECK_EQ(row * V, static_cast<std::int64_t>(logits.size()), Internal,
               "serve: logit rows of the step");
  running_.erase(std::remove_if(running_.begin(), running_.end(),
                                [](const std::unique_ptr<Active>& a) { return a->finished; }),
                 running_.end());
  std::lock_guard<std::mutex> l(mu_);
  running_count_ = static_cast<int>(running_.size());
}

void Scheduler::fail_all(const std::string& why) {
  std::lock_guard<std::mutex> l(mu_);
  draining_ = stop_ = true;
  for (const auto& r : queue_) complete(*r, "error", why);
  queue_.clear();
  for (auto& a : running_) complete(*a->request, "error", why);
  running_.clear();
  running_count_ = 0;
}

}  // namespace epx::serve
