// What GET /metrics reports, in Prometheus' text format (version 0.0.4):
// counters of requests and tokens, histograms of the time to the first token
// and per output token, gauges of the batch, the queue and the KV blocks per
// rank, and the tokens each routed expert got. Thread-safe.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

namespace epx::serve {

class Histogram {
 public:
  explicit Histogram(std::vector<double> upper_bounds);
  void observe(double v);
  // The metric's lines: NAME_bucket{le=...} (cumulative), NAME_sum, NAME_count.
  void write(std::string& out, const std::string& name) const;

 private:
  std::vector<double> bounds_;
  std::vector<std::uint64_t> counts_;  // per bucket, not cumulative; last = +Inf
  double sum_ = 0;
  std::uint64_t count_ = 0;
};

class Metrics {
 public:
  Metrics(int num_ranks, int num_moe_layers, int num_experts, int blocks_per_rank);

  void request_finished(const std::string& reason, std::int64_t prompt_tokens,
                        std::int64_t completion_tokens);
  void request_rejected(const std::string& reason);  // "queue_full", "invalid", "draining"
  void first_token(double seconds);
  void next_token(double seconds);
  void step(int batch, std::int64_t tokens, int running, int waiting,
            const std::vector<std::int64_t>& blocks_used);
  void expert_tokens(const std::vector<std::int64_t>& counts);  // [MoE layer * E], added
  void kv_blocks(const std::vector<std::int64_t>& used);        // per rank, now
  // A decode step (every segment one token) on rank 0, from the forward to
  // the gathered logits, by its path: "normal", "low-latency" or
  // "low-latency-overlap" (epx_decode_step_seconds{mode=...}, sum and count).
  void decode_step(const std::string& mode, double seconds);
  // A rank-0 view of one live rebalance (the balancer's report): moved
  // bytes and the worst layer's max/mean rank load before and after.
  void rebalanced(std::uint64_t moved_bytes, double before, double after, double seconds);

  // Whether the engine dispatches e4m3 (epx_fp8_dispatch, a 0/1 gauge).
  void set_fp8_dispatch(bool on);

  std::string prometheus() const;

 private:
  mutable std::mutex mu_;
  int num_ranks_, num_moe_layers_, num_experts_, blocks_per_rank_;
  std::vector<std::pair<std::string, std::uint64_t>> finished_, rejected_;
  std::uint64_t prompt_tokens_ = 0, completion_tokens_ = 0, steps_ = 0, step_tokens_ = 0;
  Histogram ttft_, tpot_;
  int batch_ = 0, running_ = 0, waiting_ = 0;
  std::vector<std::int64_t> blocks_used_, expert_tokens_;
  std::vector<std::pair<std::string, std::pair<double, std::uint64_t>>> decode_steps_;
  std::uint64_t rebalances_ = 0, moved_bytes_ = 0;
  double rebalance_seconds_ = 0, load_before_ = 0, load_after_ = 0;
  bool fp8_dispatch_ = false;
};

}  // namespace epx::serve
