// What epx-train tells the user: a progress line per step, metrics.jsonl
// (one JSON object per step) and an SVG report of the run at the end.
#pragma once

#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

#include "train/trainer.hpp"

namespace epx::train {

// max/mean of one layer's tokens per expert (1 when perfectly even, 0 when none).
double load_max_over_mean(const std::vector<std::int64_t>& counts);

// "step 12/200 | loss 2.8412 | lr 2.40e-03 | gnorm 0.912 | 5210 tok/s | 98.1 ms
//  (compute 80.2, ep 12.4, dp 5.5)"
std::string progress_line(const StepResult& r, std::int64_t max_steps);

// "rebalance at step 50: max/mean GPU load per MoE layer 1.62 -> 1.04 (EPLB
//  1.09), 1.48 -> 1.02 (EPLB 1.05); moved 3.1 MiB (9.4 MiB without slot
//  matching) in 12.0 ms"
std::string rebalance_line(const RebalanceReport& r);

// The run so far, for the report.
struct History {
  std::vector<std::int64_t> steps;
  std::vector<double> losses;
  std::vector<std::int64_t> eval_steps;
  std::vector<double> eval_losses;
  std::vector<std::vector<double>> load;  // [step][MoE layer] max/mean
  std::vector<double> rank_load;          // [step] (row, expert) pairs per rank, max/mean
  std::vector<std::int64_t> rebalance_steps;
  double unigram_entropy = 0;
  void add(const StepResult& r);
};

class MetricsLog {
 public:
  MetricsLog() = default;
  // Opens `path` (empty: no file). Resumed at `resume_step` > 0, it keeps the
  // lines of steps <= resume_step (a run that died after its checkpoint
  // wrote later steps that are about to run again), adds them to `history`,
  // and appends; else it starts the file afresh.
  MetricsLog(const std::string& path, std::int64_t resume_step, History& history);
  // One line: step, loss, lr, grad_norm, tokens_per_s, ms {total, compute, ep, dp},
  // expert_counts, expert_load_max_over_mean, rank_pairs_max_over_mean,
  // expert_ms {max, mean} over ranks, a "rebalance" object at a rebalance,
  // and eval_loss when given (>= 0).
  void write(const StepResult& r, double eval_loss = -1);

 private:
  std::ofstream out_;
};

// An SVG with the train and eval loss against the step (the unigram entropy
// as a reference line) and each MoE layer's expert load max/mean over time,
// with the ranks' expert work max/mean and the rebalances marked.
void write_report_svg(const std::string& path, const History& h, const std::string& title);

}  // namespace epx::train
