// epx-train --bench: training speed of a config, against the ceilings and the
// baseline measured in the same run (docs/performance.md).
#pragma once

#include <string>
#include <vector>

#include <epx/group.hpp>

#include "train/config.hpp"

namespace epx::launch {

struct TrainBenchOptions {
  int steps = 10;   // timed steps (after the warm-up)
  int warmup = 2;
  std::string torch_script;  // PyTorch eager reference; empty: not run
  std::string config_path;   // passed to the PyTorch reference with the overrides
  std::vector<std::string> sets;
  bool json = false;
};

// Collective over `world`. Trains `steps` + `warmup` steps (no checkpoint),
// then prints tokens/s and the per-step split (median step), model FLOP/s
// against a single-core sgemm peak measured on every rank at once, and, on
// one rank, the PyTorch reference's tokens/s for the same model, batch and
// threads. Returns the exit status.
int run_train_bench(const train::Config& config, Group& world, const TrainBenchOptions& options);

// Model FLOPs per token as PaLM counts them: 6 x the active parameters
// (matrices a token passes through, embedding lookup excluded, top_k routed
// experts) + 12 L H seq_len for attention.
double model_flops_per_token(const train::ModelConfig& m, int seq_len);

}  // namespace epx::launch
