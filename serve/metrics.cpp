#include "serve/metrics.hpp"

#include <cstdio>

namespace epx::serve {

namespace {

std::string number(double v) {
  char b[64];
  std::snprintf(b, sizeof b, "%.9g", v);
  return b;
}

void bump(std::vector<std::pair<std::string, std::uint64_t>>& v, const std::string& key) {
  for (auto& [k, n] : v)
    if (k == key) return void(++n);
  v.emplace_back(key, 1);
}

void header(std::string& out, const char* name, const char* type, const char* help) {
  out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
}

// Seconds: 1 ms to 60 s.
std::vector<double> latency_buckets() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
}

}  // namespace

Histogram::Histogram(std::vector<double> b)
    : bounds_(std::move(b)), counts_(bounds_.size() + 1, 0) {}

void Histogram::observe(double v) {
  std::size_t i = 0;
  while (i < bounds_.size() && v > bounds_[i]) ++i;
  ++counts_[i];
  sum_ += v;
  ++count_;
}

void Histogram::write(std::string& out, const std::string& name) const {
  std::uint64_t run = 0;
  for (std::size_t i = 0; i < counts_.size(); ++i) {
    run += counts_[i];
    const std::string le = i < bounds_.size() ? number(bounds_[i]) : "+Inf";
    out += name + "_bucket{le=\"" + le + "\"} " + std::to_string(run) + "\n";
  }
  out += name + "_sum " + number(sum_) + "\n" + name + "_count " + std::to_string(count_) + "\n";
}

Metrics::Metrics(int num_ranks, int num_moe_layers, int num_experts, int blocks_per_rank)
    : num_ranks_(num_ranks),
      num_moe_layers_(num_moe_layers),
      num_experts_(num_experts),
      blocks_per_rank_(blocks_per_rank),
      ttft_(latency_buckets()),
      tpot_(latency_buckets()),
      blocks_used_(static_cast<std::size_t>(num_ranks), 0),
      expert_tokens_(static_cast<std::size_t>(num_moe_layers) * num_experts, 0) {}

void Metrics::request_finished(const std::string& reason, std::int64_t prompt,
                               std::int64_t completion) {
  std::lock_guard<std::mutex> l(mu_);
  bump(finished_, reason);
  prompt_tokens_ += static_cast<std::uint64_t>(prompt);
  completion_tokens_ += static_cast<std::uint64_t>(completion);
}

void Metrics::request_rejected(const std::string& reason) {
  std::lock_guard<std::mutex> l(mu_);
  bump(rejected_, reason);
}

void Metrics::first_token(double s) {
  std::lock_guard<std::mutex> l(mu_);
  ttft_.observe(s);
}

void Metrics::next_token(double s) {
  std::lock_guard<std::mutex> l(mu_);
  tpot_.observe(s);
}

void Metrics::decode_step(const std::string& mode, double seconds) {
  std::lock_guard<std::mutex> l(mu_);
  for (auto& [k, v] : decode_steps_)
    if (k == mode) {
      v.first += seconds;
      ++v.second;
      return;
    }
  decode_steps_.push_back({mode, {seconds, 1}});
}

void Metrics::step(int batch, std::int64_t tokens, int running, int waiting,
                   const std::vector<std::int64_t>& blocks_used) {
  std::lock_guard<std::mutex> l(mu_);
  if (tokens > 0) ++steps_;  // heartbeats with nothing to run are not steps
  step_tokens_ += static_cast<std::uint64_t>(tokens);
  batch_ = batch;
  running_ = running;
  waiting_ = waiting;
  blocks_used_ = blocks_used;
}

void Metrics::kv_blocks(const std::vector<std::int64_t>& used) {
  std::lock_guard<std::mutex> l(mu_);
  blocks_used_ = used;
}

void Metrics::expert_tokens(const std::vector<std::int64_t>& counts) {
  std::lock_guard<std::mutex> l(mu_);
  for (std::size_t i = 0; i < counts.size() && i < expert_tokens_.size(); ++i)
    expert_tokens_[i] += counts[i];
}

void Metrics::rebalanced(std::uint64_t moved_bytes, double before, double after, double seconds) {
  std::lock_guard<std::mutex> l(mu_);
  ++rebalances_;
  moved_bytes_ += moved_bytes;
  rebalance_seconds_ += seconds;
  load_before_ = before;
  load_after_ = after;
}

void Metrics::set_fp8_dispatch(bool on) {
  std::lock_guard<std::mutex> l(mu_);
  fp8_dispatch_ = on;
}

std::string Metrics::prometheus() const {
  std::lock_guard<std::mutex> l(mu_);
  std::string o;
  header(o, "epx_requests_total", "counter", "Finished requests by finish reason");
  for (const auto& [k, n] : finished_)
    o += "epx_requests_total{finish_reason=\"" + k + "\"} " + std::to_string(n) + "\n";
  header(o, "epx_requests_rejected_total", "counter", "Requests refused by reason");
  for (const auto& [k, n] : rejected_)
    o += "epx_requests_rejected_total{reason=\"" + k + "\"} " + std::to_string(n) + "\n";
  header(o, "epx_prompt_tokens_total", "counter", "Prompt tokens of finished requests");
  o += "epx_prompt_tokens_total " + std::to_string(prompt_tokens_) + "\n";
  header(o, "epx_generation_tokens_total", "counter", "Generated tokens of finished requests");
  o += "epx_generation_tokens_total " + std::to_string(completion_tokens_) + "\n";
  header(o, "epx_steps_total", "counter", "Engine steps that ran tokens");
  o += "epx_steps_total " + std::to_string(steps_) + "\n";
  header(o, "epx_step_tokens_total", "counter",
         "Tokens run by the engine steps (prefill and decode)");
  o += "epx_step_tokens_total " + std::to_string(step_tokens_) + "\n";
  header(o, "epx_time_to_first_token_seconds", "histogram",
         "From arrival to the first generated token");
  ttft_.write(o, "epx_time_to_first_token_seconds");
  header(o, "epx_time_per_output_token_seconds", "histogram",
         "Between consecutive generated tokens");
  tpot_.write(o, "epx_time_per_output_token_seconds");
  header(o, "epx_decode_step_seconds", "summary",
         "Decode steps on rank 0, forward to gathered logits, by dispatch path");
  for (const auto& [k, v] : decode_steps_) {
    o += "epx_decode_step_seconds_sum{mode=\"" + k + "\"} " + std::to_string(v.first) + "\n";
    o += "epx_decode_step_seconds_count{mode=\"" + k + "\"} " + std::to_string(v.second) + "\n";
  }
  header(o, "epx_fp8_dispatch", "gauge",
         "1: the MoE dispatch sends e4m3 with per-token 1x128 scales (--fp8-dispatch), 0: f32");
  o += std::string("epx_fp8_dispatch ") + (fp8_dispatch_ ? "1" : "0") + "\n";
  header(o, "epx_batch_size", "gauge", "Sequences in the last step");
  o += "epx_batch_size " + std::to_string(batch_) + "\n";
  header(o, "epx_requests_running", "gauge", "Requests holding a KV cache");
  o += "epx_requests_running " + std::to_string(running_) + "\n";
  header(o, "epx_requests_waiting", "gauge", "Requests in the queue");
  o += "epx_requests_waiting " + std::to_string(waiting_) + "\n";
  header(o, "epx_kv_blocks_used", "gauge", "KV cache blocks in use per rank");
  for (int r = 0; r < num_ranks_; ++r)
    o += "epx_kv_blocks_used{rank=\"" + std::to_string(r) + "\"} " +
         std::to_string(blocks_used_[r]) + "\n";
  header(o, "epx_kv_blocks_total", "gauge", "KV cache blocks per rank");
  o += "epx_kv_blocks_total " + std::to_string(blocks_per_rank_) + "\n";
  header(o, "epx_expert_tokens_total", "counter",
         "(token, expert) choices per MoE layer and routed expert");
  for (int m = 0; m < num_moe_layers_; ++m)
    for (int e = 0; e < num_experts_; ++e)
      o += "epx_expert_tokens_total{moe_layer=\"" + std::to_string(m) + "\",expert=\"" +
           std::to_string(e) + "\"} " +
           std::to_string(expert_tokens_[static_cast<std::size_t>(m) * num_experts_ + e]) + "\n";
  header(o, "epx_rebalances_total", "counter", "Live expert rebalances (balancer: in the config)");
  o += "epx_rebalances_total " + std::to_string(rebalances_) + "\n";
  header(o, "epx_rebalance_moved_bytes_total", "counter",
         "Expert weight bytes rank 0 received in rebalances");
  o += "epx_rebalance_moved_bytes_total " + std::to_string(moved_bytes_) + "\n";
  header(o, "epx_rebalance_seconds_total", "counter", "Rank 0's time planning and migrating");
  o += "epx_rebalance_seconds_total " + std::to_string(rebalance_seconds_) + "\n";
  header(o, "epx_expert_load_max_over_mean", "gauge",
         "The worst MoE layer's max/mean rank load over the balancer window, under the placement "
         "before and after the last rebalance");
  o += "epx_expert_load_max_over_mean{placement=\"before\"} " + std::to_string(load_before_) + "\n";
  o += "epx_expert_load_max_over_mean{placement=\"after\"} " + std::to_string(load_after_) + "\n";
  return o;
}

}  // namespace epx::serve
