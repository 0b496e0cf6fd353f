// epx-train's configuration: the YAML file's sections as structs, parsed by
// yaml-cpp and validated before any work (docs/train.md lists every key).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <epx/pipeline.hpp>

#include "model/model_config.hpp"

namespace epx::train {

// model: the network (model/model_config.hpp).
using ModelConfig = model::ModelConfig;

struct TrainConfig {
  int seq_len = 64;
  int micro_batch_size = 4;
  int num_micro_batches = 1;
  int max_steps = 100;
  double lr = 3e-3;
  double min_lr = 3e-4;
  int warmup_steps = 10;
  double weight_decay = 0.1;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double grad_clip = 1.0;  // 0: no clipping
  std::uint64_t seed = 1234;
  int eval_every = 0;      // 0: no eval during the run (one at the end)
  int eval_batches = 4;
  int checkpoint_every = 0;  // 0: only the final checkpoint
  std::string checkpoint_dir = "checkpoints";
  int threads = 1;
};

struct DataConfig {
  std::string path;
  std::string format = "bytes";  // bytes | u16 | u32
  double val_fraction = 0.1;
};

struct ParallelConfig {
  int pp = 1;  // pipeline stages' ranks: the world is pp x dp ranks (docs/train.md)
  std::string schedule = "1f1b";  // gpipe | 1f1b | zb-h1 | dualpipe | dualpipev | auto
  int dp = 1;                     // data-parallel ranks per pipeline stage
  int ep = 1;  // ranks per EP group: consecutive ranks that together hold every expert
  bool fp8_dispatch = false;
  // Layers per model stage of the schedule (pp, or 2 pp for DualPipeV), in
  // stage order; empty: the even split (train/pipeline_stage.hpp).
  std::vector<int> layers_per_stage;
  // DualPipe/DualPipeV with ep > 1: each FB unit overlaps its forward and
  // backward halves on two threads (train/pipeline_stage.hpp); the same numbers.
  bool fb_overlap = true;
};

// The live expert balancer (docs/train.md): every `every` steps, the expert
// loads of the last `window` steps give a new placement of num_experts +
// redundant_experts slots per MoE layer over each EP group, and the expert
// weights and AdamW moments migrate to it. It changes where experts live,
// not the numbers.
struct BalancerConfig {
  bool enabled = false;
  int redundant_experts = 0;        // extra slots per MoE layer; E + this a multiple of parallel.ep
  int every = 50;                   // steps between rebalances
  int window = 50;                  // steps of load statistics a plan looks at
  std::string policy = "balanced";  // balanced | eplb | incremental (include/epx/balancer.hpp)
  double max_migration = 0.25;      // incremental: copies, as a share of a from-scratch plan's
};

struct LogConfig {
  std::string metrics;  // JSON-lines file, or empty: none
  int every = 1;        // progress line every N steps
  std::string report;   // SVG report written at the end, or empty: <checkpoint_dir>/report.svg
  std::string timeline;   // pp > 1: SVG of one step's ops, measured and simulated, or empty: none
  int timeline_step = 2;  // the step it shows (step 1 warms up)
};

struct Config {
  ModelConfig model;
  TrainConfig train;
  DataConfig data;
  ParallelConfig parallel;
  BalancerConfig balancer;
  LogConfig log;
};

// Parses YAML text. `overrides` are "section.key=value" (the --set flags),
// applied on top, value parsed as YAML. Unknown sections or keys, wrong
// types and out-of-range values throw epx::Error(InvalidArgument) naming the
// key and the value ("config: model.top_k = 9, expected <= 8 (experts in the
// kept groups)"). Checks that need the world size or files are in validate().
Config parse_config(const std::string& yaml_text, const std::vector<std::string>& overrides = {});
Config load_config(const std::string& path, const std::vector<std::string>& overrides = {});

// Every check that needs more than one key: ranges that depend on other keys
// (top_k vs the experts of the kept groups, experts per group >= 2, hidden %
// heads, even head_dim, dp % ep, E % ep, V == 256 with bytes), the world size
// (dp must equal it) and the data file (exists, holds enough tokens).
// Throws InvalidArgument naming the key(s) and value(s).
void validate(const Config& config, int world_size);

// The data file's split (docs/train.md): the last floor(total *
// val_fraction) tokens are the validation split, the `train` tokens before
// them the training split. validate() and the data loader both use it, so
// that they agree on N.
struct DataSplit {
  std::uint64_t total = 0, train = 0, val = 0;
};
DataSplit data_split(std::uint64_t total_tokens, double val_fraction);
// Bytes per token of data.format: bytes 1, u16 2, u32 4 (throws for another).
int token_bytes(const std::string& format);

// The pipeline schedule parallel.schedule names for parallel.pp ranks and
// train.num_micro_batches (auto: pipeline::choose_schedule's pick for unit
// costs). Throws epx::Error(InvalidArgument) when the shape is impossible.
pipeline::Schedule make_pipeline_schedule(const Config& config);

// "pp 2 (dualpipe) x dp 2 x ep 2", or "dp 2 x ep 2" without pp.
std::string grid_text(const ParallelConfig& parallel);

// The config back as YAML (state.json keeps it; --set values included).
std::string to_yaml(const Config& config);

}  // namespace epx::train
