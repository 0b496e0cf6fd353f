// What epx-serve and epx-generate share: the model to serve (an epx-train
// checkpoint, or a safetensors file plus a config), the engine flags, and
// the start-up and failure handling around the engine.
#pragma once

#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <epx/group.hpp>

#include "launch/options.hpp"
#include "model/model.hpp"
#include "serve/engine.hpp"
#include "train/config.hpp"
#include "train/exchange.hpp"
#include "train/expert_balancer.hpp"

namespace epx::launch {

struct ServeFlags {
  std::string model;   // --model CKPT
  std::string config;  // --config YAML
  std::vector<std::string> sets;  // --set section.key=value, over the config
  int max_batch = 8;
  int max_queue = 64;
  int kv_memory_mib = 64;
  int max_context = 0;  // 0: the config's train.seq_len
  int prefill_chunk = 64;
  bool deterministic = false;
  bool low_latency_decode = false;  // --decode-mode low-latency
  bool auto_decode = false;         // --decode-mode auto
  // --overlap on|off|alternate: the two-batch overlap of low-latency decode.
  serve::EngineOptions::Overlap overlap = serve::EngineOptions::Overlap::off;
  // --fp8-dispatch config|on|off: config takes the config's
  // parallel.fp8_dispatch (after --set).
  std::string fp8_dispatch = "config";
};

// The flag text of ServeFlags for a --help.
extern const char* const kServeFlagsHelp;

// If argv[i] is one of ServeFlags' flags, consumes it (and its value,
// advancing i) and returns true; -h/--help prints `usage` then the flags
// (on rank 0) and exits 0. Throws UsageError ("--max-batch = 'x', expected
// an integer in [1, 4096]").
bool parse_serve_flag(ServeFlags& flags, int argc, char** argv, int& i, const char* usage);
// The value after flag argv[i] (advancing i), or UsageError "FLAG needs a value".
std::string flag_value(int argc, char** argv, int& i);
// An integer flag's value in [lo, hi], or UsageError naming the flag.
long parse_int_flag(const std::string& flag, const std::string& value, long lo, long hi);
double parse_double_flag(const std::string& flag, const std::string& value);

struct ServedModel {
  train::Config config;
  std::string weights;  // the safetensors file
  std::string name;     // the model field of the responses
  // With balancer.enabled: the live balancer over the world (EP over every
  // rank), whose placement the model's slots follow; engine.balancer points
  // to it. Declared before the model: it goes after it.
  std::unique_ptr<train::Comm> balancer_comm;
  std::unique_ptr<train::ExpertBalancer> balancer;
  std::unique_ptr<model::Model> model;
  serve::EngineOptions engine;
};

// Collective over `world`: resolves --model (a step-N directory with
// model.safetensors and state.json, a checkpoint_dir with a `latest`, or a
// .safetensors file, which needs --config; --config overrides state.json's
// config; --set overrides either), builds this rank's share of the model
// (with balancer.enabled, the balancer and its first placement's slots) and
// loads its weights.
// Any rank's failure throws InvalidArgument on every rank, with one message.
ServedModel load_served_model(const ServeFlags& flags, Group& world, double timeout_s);

// Runs `body` under MPI_Init/Finalize with epx-train's error rules: an
// InvalidArgument (agreed on every rank) is printed once by rank 0 and
// exits 1; anything else is printed where it happened and aborts the job,
// so no rank waits on one that stopped.
int run_mpi_program(const char* name, int argc, char** argv,
                    const std::function<int(Group&)>& body);

bool is_rank0_by_env();

// main() of epx-serve and epx-generate: `parse(argc, argv)` before MPI (a
// UsageError is one line on rank 0 and exit status 2), then `run(args, world)`
// under run_mpi_program.
template <class Parse, class Run>
int program_main(const char* name, int argc, char** argv, Parse parse, Run run) {
  decltype(parse(argc, argv)) args;
  try {
    args = parse(argc, argv);
  } catch (const UsageError& e) {
    // One write of the whole line: under mpirun the ranks' output is merged,
    // and a line written in pieces can be split by another process's.
    if (is_rank0_by_env()) {
      const std::string line = std::string(name) + ": " + e.what() + " (see --help)\n";
      std::fputs(line.c_str(), stderr);
      std::fflush(stderr);
    }
    return 2;
  }
  return run_mpi_program(name, argc, argv, [&](Group& world) { return run(args, world); });
}

}  // namespace epx::launch
