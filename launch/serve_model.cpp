#include "launch/serve_model.hpp"

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <thread>

#include <mpi.h>

#include <nlohmann/json.hpp>

#include "core/agree.hpp"
#include "core/check.hpp"
#include "launch/options.hpp"
#include "model/load_weights.hpp"

namespace fs = std::filesystem;

namespace epx::launch {

const char* const kServeFlagsHelp =
    "  --model CKPT        an epx-train checkpoint (a step-N directory, or a checkpoint_dir\n"
    "                      with a `latest`), or an exported .safetensors file (with --config)\n"
    "  --config YAML       the model's config (default: the checkpoint's state.json)\n"
    "  --set KEY=VALUE     override one config entry, e.g. balancer.enabled=true (repeatable;\n"
    "                      the balancer: section turns on live expert balancing, docs/serve.md)\n"
    "  --max-batch N       requests running at once (default 8)\n"
    "  --max-queue N       requests waiting for a slot; past it, 503 (default 64)\n"
    "  --kv-memory MiB     KV cache per rank (default 64)\n"
    "  --max-context N     prompt + max_tokens limit (default: the config's train.seq_len)\n"
    "  --prefill-chunk N   prompt tokens per request per step (default 64)\n"
    "  --deterministic     batch-invariant kernels: a request's output does not depend on\n"
    "                      the other requests of its steps (docs/serve.md)\n"
    "  --decode-mode M     normal (default), low-latency or auto: the dispatch and combine of\n"
    "                      decode steps (the same outputs; docs/serve.md compares their speed);\n"
    "                      auto: per batch size, the faster at a start-up measurement (logged)\n"
    "  --overlap M         off (default), on or alternate: low-latency decode steps in two\n"
    "                      micro-batches, one's all-to-all in flight while the other computes\n"
    "                      (the same outputs; slower on CPU, docs/serve.md); alternate: every\n"
    "                      other step, both timed in /metrics (epx_decode_step_seconds)\n"
    "  --fp8-dispatch M    config (default: the config's parallel.fp8_dispatch), on or off:\n"
    "                      the MoE dispatch (prefill and decode) sends e4m3 rows with per-token\n"
    "                      1x128 scales and the experts take them dequantised, as in training;\n"
    "                      needs model.hidden_size a multiple of 128 (docs/serve.md)\n";

long parse_int_flag(const std::string& flag, const std::string& v, long lo, long hi) {
  char* end = nullptr;
  errno = 0;
  const long n = std::strtol(v.c_str(), &end, 10);
  if (v.empty() || *end || errno != 0 || n < lo || n > hi)
    throw UsageError(flag + " = '" + v + "', expected an integer in [" + std::to_string(lo) + ", " +
                     std::to_string(hi) + "]");
  return n;
}

double parse_double_flag(const std::string& flag, const std::string& v) {
  char* end = nullptr;
  const double x = std::strtod(v.c_str(), &end);
  if (v.empty() || *end || !std::isfinite(x))
    throw UsageError(flag + " = '" + v + "', expected a number");
  return x;
}

std::string flag_value(int argc, char** argv, int& i) {
  if (i + 1 >= argc) throw UsageError(std::string(argv[i]) + " needs a value");
  return argv[++i];
}

bool parse_serve_flag(ServeFlags& f, int argc, char** argv, int& i, const char* usage) {
  const std::string s = argv[i];
  const auto value = [&]() { return flag_value(argc, argv, i); };
  if (s == "-h" || s == "--help") {
    if (is_rank0_by_env()) {
      const std::string text = std::string(usage) + kServeFlagsHelp;  // one write
      std::fputs(text.c_str(), stdout);
      std::fflush(stdout);
    }
    std::exit(0);
  } else if (s == "--model") {
    f.model = value();
  } else if (s == "--config") {
    f.config = value();
  } else if (s == "--set") {
    f.sets.push_back(value());
  } else if (s == "--max-batch") {
    f.max_batch = static_cast<int>(parse_int_flag(s, value(), 1, 4096));
  } else if (s == "--max-queue") {
    f.max_queue = static_cast<int>(parse_int_flag(s, value(), 0, 1 << 20));
  } else if (s == "--kv-memory") {
    f.kv_memory_mib = static_cast<int>(parse_int_flag(s, value(), 1, 1 << 20));
  } else if (s == "--max-context") {
    f.max_context = static_cast<int>(parse_int_flag(s, value(), 1, 1 << 24));
  } else if (s == "--prefill-chunk") {
    f.prefill_chunk = static_cast<int>(parse_int_flag(s, value(), 1, 1 << 20));
  } else if (s == "--deterministic") {
    f.deterministic = true;
  } else if (s == "--decode-mode") {
    const std::string v = value();
    if (v != "normal" && v != "low-latency" && v != "auto")
      throw UsageError("--decode-mode = '" + v + "', expected normal, low-latency or auto");
    f.low_latency_decode = v == "low-latency";
    f.auto_decode = v == "auto";
  } else if (s == "--fp8-dispatch") {
    const std::string v = value();
    if (v != "config" && v != "on" && v != "off")
      throw UsageError("--fp8-dispatch = '" + v + "', expected config, on or off");
    f.fp8_dispatch = v;
  } else if (s == "--overlap") {
    const std::string v = value();
    using Overlap = serve::EngineOptions::Overlap;
    if (v != "on" && v != "off" && v != "alternate")
      throw UsageError("--overlap = '" + v + "', expected on, off or alternate");
    f.overlap = v == "on" ? Overlap::on : v == "off" ? Overlap::off : Overlap::alternate;
  } else {
    return false;
  }
  return true;
}

namespace {

// The step directory of `dir`: itself if it holds model.safetensors, else its `latest`'s.
fs::path step_dir(const fs::path& dir) {
  if (fs::exists(dir / "model.safetensors")) return dir;
  std::ifstream in(dir / "latest");
  std::string name;
  EPX_CHECK(static_cast<bool>(in >> name), InvalidArgument, "--model ", dir.string(),
            ": neither a checkpoint (no model.safetensors) nor a checkpoint_dir (no latest)");
  return dir / name;
}

train::Config read_config(const ServeFlags& f, fs::path& weights) {
  const fs::path m = f.model;
  EPX_CHECK(!f.model.empty(), InvalidArgument, "--model is required");
  EPX_CHECK(fs::exists(m), InvalidArgument, "--model ", f.model, ": no such file or directory");
  if (!fs::is_directory(m)) {
    weights = m;
    EPX_CHECK(!f.config.empty(), InvalidArgument, "--model ", f.model,
              " is a safetensors file: give its config with --config");
    return train::load_config(f.config, f.sets);
  }
  const fs::path dir = step_dir(m);
  weights = dir / "model.safetensors";
  if (!f.config.empty()) return train::load_config(f.config, f.sets);
  std::ifstream in(dir / "state.json");
  EPX_CHECK(in.good(), InvalidArgument, "--model ", f.model, ": ", (dir / "state.json").string(),
            " cannot be read (or give --config)");
  nlohmann::json state;
  try {
    state = nlohmann::json::parse(in);
  } catch (const std::exception& e) {
    EPX_THROW(InvalidArgument, (dir / "state.json").string(), " is not valid JSON (", e.what(),
              ")");
  }
  EPX_CHECK(state.contains("config") && state["config"].is_string(), InvalidArgument,
            (dir / "state.json").string(), " has no config (or give --config)");
  return train::parse_config(state["config"].get<std::string>(), f.sets);
}

}  // namespace

ServedModel load_served_model(const ServeFlags& f, Group& world, double timeout_s) {
  ServedModel s;
  std::string error;
  try {
    fs::path weights;
    s.config = read_config(f, weights);
    s.weights = weights.string();
    s.name = f.model;
    const model::ModelConfig& c = s.config.model;
    EPX_CHECK(c.hidden_size % c.num_heads == 0 && c.head_dim() % 2 == 0, InvalidArgument,
              "config: model.hidden_size = ", c.hidden_size, " and model.num_heads = ", c.num_heads,
              " give no even head_dim");
    EPX_CHECK(c.num_experts % world.size() == 0, InvalidArgument,
              "config: model.num_experts = ", c.num_experts, " does not split over the ",
              world.size(), " ranks (EP over every rank: run on a divisor of it)");
    const train::BalancerConfig& b = s.config.balancer;
    EPX_CHECK(!b.enabled || (c.num_experts + b.redundant_experts) % world.size() == 0,
              InvalidArgument, "config: balancer.redundant_experts = ", b.redundant_experts,
              " gives ", c.num_experts + b.redundant_experts, " expert slots per layer (",
              "model.num_experts = ", c.num_experts, " + it), expected a multiple of the ",
              world.size(), " ranks (each holds the same number of slots)");
    serve::EngineOptions& e = s.engine;
    e.max_batch = f.max_batch;
    e.max_queue = f.max_queue;
    e.kv_bytes = static_cast<std::size_t>(f.kv_memory_mib) << 20;
    e.max_context = f.max_context > 0 ? f.max_context : s.config.train.seq_len;
    e.prefill_chunk = f.prefill_chunk;
    e.deterministic = f.deterministic;
    e.low_latency_decode = f.low_latency_decode;
    e.auto_decode = f.auto_decode;
    e.overlap_decode = f.overlap;
    // The same config and flags on every rank: the same verdict everywhere.
    e.fp8_dispatch =
        f.fp8_dispatch == "config" ? s.config.parallel.fp8_dispatch : f.fp8_dispatch == "on";
    EPX_CHECK(!e.fp8_dispatch || c.hidden_size % 128 == 0, InvalidArgument, "--fp8-dispatch ",
              f.fp8_dispatch, f.fp8_dispatch == "config" ? " (parallel.fp8_dispatch = true)" : "",
              ": model.hidden_size = ", c.hidden_size,
              " is not a multiple of 128 (fp8 dispatch scales blocks of 128 channels); use "
              "--fp8-dispatch off");
    e.timeout_s = timeout_s;
  } catch (const std::exception& e) {
    error = e.what();
  }
  core::agree_on_error(world.comm(), error, ErrorCode::InvalidArgument, core::Deadline(timeout_s),
                       "reading the model's config");
  const model::ModelConfig& c = s.config.model;
  if (s.config.balancer.enabled) {
    // Every rank reached here (the agreement above): the set-up collectives are safe.
    s.balancer_comm = std::make_unique<train::Comm>(world.comm(), timeout_s);
    s.balancer = std::make_unique<train::ExpertBalancer>(s.config, world, world, *s.balancer_comm,
                                                         /*moments=*/false);
    s.engine.balancer = s.balancer.get();
  }
  try {
    s.model = s.balancer ? std::make_unique<model::Model>(c, world.rank(), world.size(),
                                                          s.balancer->slots_of(world.rank()))
                         : std::make_unique<model::Model>(c, world.rank(), world.size());
    model::load_weights(*s.model, s.weights);
  } catch (const std::exception& e) {
    error = e.what();
  }
  core::agree_on_error(world.comm(), error, ErrorCode::InvalidArgument, core::Deadline(timeout_s),
                       "loading the model");
  return s;
}

bool is_rank0_by_env() {
  const char* r = std::getenv("OMPI_COMM_WORLD_RANK");
  if (!r) r = std::getenv("PMI_RANK");
  return !r || std::string(r) == "0";
}

namespace {

// MPI_Abort, bounded: when mpirun is already ending the job (a rank died)
// it waits, forever, to hand mpirun its message; after 3 s this rank exits 1
// by itself, and mpirun, seeing a non-zero status, ends the job.
[[noreturn]] void abort_job() {
  std::thread([] {
    std::this_thread::sleep_for(std::chrono::seconds(3));
    std::_Exit(1);
  }).detach();
  MPI_Abort(MPI_COMM_WORLD, 1);
  std::_Exit(1);
}

}  // namespace

int run_mpi_program(const char* name, int argc, char** argv,
                    const std::function<int(Group&)>& body) {
  MPI_Init(&argc, &argv);
  int rc = 0;
  try {
    Group world(MPI_COMM_WORLD);
    rc = body(world);
  } catch (const Error& e) {
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    if (e.code() == ErrorCode::InvalidArgument) {
      if (rank == 0) std::fprintf(stderr, "%s: FAILED: %s\n", name, e.what());
      MPI_Finalize();
      return 1;
    }
    std::fprintf(stderr, "%s: FAILED: %s\n", name, e.what());
    std::fflush(stderr);
    abort_job();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: FAILED: %s\n", name, e.what());
    std::fflush(stderr);
    abort_job();
  }
  MPI_Finalize();
  return rc;
}

}  // namespace epx::launch
