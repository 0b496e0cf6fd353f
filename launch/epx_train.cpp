// epx-train: trains the MoE model of docs/train.md on a DP x EP grid.
//
//   epxrun -n 4 -- epx-train configs/tiny.yaml [--set section.key=value]... [--resume auto|DIR]
//   epx-train --export CHECKPOINT_DIR OUT.safetensors
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include <mpi.h>

#include <epx/error.hpp>
#include <epx/group.hpp>

#include "core/config.hpp"
#include "launch/train_bench.hpp"
#include "model/safetensors.hpp"
#include "train/config.hpp"
#include "train/metrics.hpp"
#include "train/trainer.hpp"

namespace fs = std::filesystem;
using namespace epx;

namespace {

constexpr const char* kUsage =
    "usage: epx-train CONFIG.yaml [--set section.key=value]... [--resume auto|DIR]\n"
    "       epx-train --export CHECKPOINT_DIR OUT.safetensors\n"
    "       epx-train CONFIG.yaml --bench [--bench-steps N] [--bench-warmup N] [--torch] [--json]\n"
    "                 [--pp N] [--schedule S] [--balancer on|off]\n"
    "Trains the MoE model of CONFIG (docs/train.md) on dp ranks (epxrun -n DP -- epx-train ...).\n"
    "  --set K=V      override a config key, e.g. --set train.max_steps=50 (repeatable)\n"
    "  --resume auto  continue from CHECKPOINT_DIR/latest if there is one, else start fresh\n"
    "  --resume DIR   continue from the checkpoint directory DIR (e.g. checkpoints/step-100)\n"
    "  --export DIR OUT  write the weights of checkpoint DIR (a step-N directory, or a\n"
    "                 checkpoint_dir with a `latest`) as one safetensors file for PyTorch\n"
    "  --bench        time N steps (default 10, after 2 warm-up steps; no checkpoint): tokens/s,\n"
    "                 the step split, model FLOP/s against a sgemm peak measured in the same run\n"
    "  --torch        with --bench on one rank: also time PyTorch eager training of the same\n"
    "                 model, batch and threads (tests/reference/torch_train_bench.py)\n"
    "  --pp N         with --bench: N pipeline ranks, dp = the world / N (parallel.pp, "
    "parallel.dp);\n"
    "                 then also the PP bubble, and the executor's time against the simulator's\n"
    "  --schedule S   with --bench: parallel.schedule (gpipe 1f1b zb-h1 dualpipe dualpipev auto)\n"
    "  --balancer on|off  with --bench: balancer.enabled\n";

struct Args {
  std::string config;
  std::vector<std::string> sets;
  std::string resume;
  std::string export_dir, export_out;
  bool bench = false, torch = false, json = false;
  int bench_steps = 10, bench_warmup = 2;
  int bench_pp = 0;  // 0: the config's
  std::string bench_schedule, bench_balancer;
};

bool is_rank0() {
  const char* r = std::getenv("OMPI_COMM_WORLD_RANK");
  if (!r) r = std::getenv("PMI_RANK");
  return !r || std::string(r) == "0";
}

[[noreturn]] void usage_error(const std::string& msg) {
  if (is_rank0()) std::cerr << "epx-train: " << msg << "\n" << kUsage;
  std::exit(2);
}

Args parse_args(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string s = argv[i];
    const auto value = [&](const char* flag) {
      if (i + 1 >= argc) usage_error(std::string(flag) + " needs a value");
      return std::string(argv[++i]);
    };
    if (s == "-h" || s == "--help") {
      if (is_rank0()) std::cout << kUsage;
      std::exit(0);
    } else if (s == "--set") {
      a.sets.push_back(value("--set"));
    } else if (s.rfind("--set=", 0) == 0) {
      a.sets.push_back(s.substr(6));
    } else if (s == "--resume") {
      a.resume = value("--resume");
    } else if (s == "--bench") {
      a.bench = true;
    } else if (s == "--torch") {
      a.torch = true;
    } else if (s == "--json") {
      a.json = true;
    } else if (s == "--bench-steps" || s == "--bench-warmup") {
      const std::string v = value(s.c_str());
      char* end = nullptr;
      const long n = std::strtol(v.c_str(), &end, 10);
      if (v.empty() || *end || n < (s == "--bench-steps" ? 1 : 0) || n > 100000)
        usage_error(s + " = '" + v + "', expected an integer in [" + (s == "--bench-steps" ? "1" : "0") +
                    ", 100000]");
      (s == "--bench-steps" ? a.bench_steps : a.bench_warmup) = static_cast<int>(n);
    } else if (s == "--pp") {
      const std::string v = value("--pp");
      char* end = nullptr;
      const long n = std::strtol(v.c_str(), &end, 10);
      if (v.empty() || *end || n < 1 || n > 4096)
        usage_error("--pp = '" + v + "', expected an integer in [1, 4096]");
      a.bench_pp = static_cast<int>(n);
    } else if (s == "--schedule") {
      a.bench_schedule = value("--schedule");  // checked with the config
    } else if (s == "--balancer") {
      a.bench_balancer = value("--balancer");
      if (a.bench_balancer != "on" && a.bench_balancer != "off")
        usage_error("--balancer = '" + a.bench_balancer + "', expected on or off");
    } else if (s == "--export") {
      a.export_dir = value("--export");
      a.export_out = value("--export");
    } else if (!s.empty() && s[0] == '-') {
      usage_error("unknown option '" + s + "'");
    } else if (a.config.empty()) {
      a.config = s;
    } else {
      usage_error("more than one config file ('" + a.config + "', '" + s + "')");
    }
  }
  if (a.export_dir.empty() && a.config.empty()) usage_error("no config file given");
  if (!a.bench && (a.bench_pp || !a.bench_schedule.empty() || !a.bench_balancer.empty()))
    usage_error(
        "--pp, --schedule and --balancer go with --bench (for training, --set parallel.pp=N ...)");
  return a;
}

// A step directory: DIR itself if it holds model.safetensors, else DIR/latest's.
fs::path checkpoint_of(const fs::path& dir) {
  if (fs::exists(dir / "model.safetensors")) return dir;
  std::ifstream in(dir / "latest");
  std::string name;
  if (in >> name) return dir / name;
  throw Error(ErrorCode::InvalidArgument, "'" + dir.string() +
                                              "' is neither a checkpoint (no model.safetensors) "
                                              "nor a checkpoint_dir (no latest)");
}

int export_weights(const Args& a) {
  try {
    const fs::path dir = checkpoint_of(a.export_dir);
    const model::SafetensorsReader r((dir / "model.safetensors").string());
    std::vector<std::pair<std::string, Tensor>> tensors;
    for (const std::string& n : r.names()) tensors.emplace_back(n, r.load_f32(n));
    std::map<std::string, std::string> meta = r.metadata();
    meta["format"] = "pt";
    model::save_safetensors(a.export_out, tensors, meta);
    std::cout << "epx-train: exported " << tensors.size() << " tensors of " << dir.string()
              << " to " << a.export_out << "\n";
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "epx-train: FAILED: " << e.what() << "\n";
    return 1;
  }
}

int run_training(const Args& a) {
  Group world(MPI_COMM_WORLD);
  const bool root = world.rank() == 0;
  train::Config cfg;
  std::string error;
  // The bench's shorthands, as the --set overrides they stand for (checked
  // with the config's keys).
  std::vector<std::string> sets = a.sets;
  if (a.bench_pp) {
    sets.push_back("parallel.pp=" + std::to_string(a.bench_pp));
    sets.push_back("parallel.dp=" + std::to_string(std::max(1, world.size() / a.bench_pp)));
  }
  if (!a.bench_schedule.empty()) sets.push_back("parallel.schedule=" + a.bench_schedule);
  if (!a.bench_balancer.empty())
    sets.push_back(std::string("balancer.enabled=") +
                   (a.bench_balancer == "on" ? "true" : "false"));
  try {
    cfg = train::load_config(a.config, sets);
  } catch (const std::exception& e) {
    error = e.what();
  }
  {
    train::Comm c(world.comm(), core::params::timeout_s.get());
    train::agree(c, error, "epx-train: reading " + a.config);
  }

  if (a.bench) {
    launch::TrainBenchOptions o;
    o.steps = a.bench_steps;
    o.warmup = a.bench_warmup;
    o.config_path = a.config;
    o.sets = sets;
    o.json = a.json;
    if (a.torch) o.torch_script = EPX_SOURCE_DIR "/tests/reference/torch_train_bench.py";
    return launch::run_train_bench(cfg, world, o);
  }

  std::string resume_dir;
  if (a.resume == "auto") {
    const fs::path latest = fs::path(cfg.train.checkpoint_dir) / "latest";
    std::ifstream in(latest);
    std::string name;
    if (in >> name) resume_dir = (fs::path(cfg.train.checkpoint_dir) / name).string();
  } else if (!a.resume.empty()) {
    resume_dir = checkpoint_of(a.resume).string();
  }

  train::Trainer t(cfg, world, resume_dir);
  const train::TrainConfig& tc = cfg.train;
  train::History history;
  history.unigram_entropy = t.data().unigram_entropy(cfg.model.vocab_size);
  train::MetricsLog metrics;
  {
    std::string error;
    try {
      if (root) metrics = train::MetricsLog(cfg.log.metrics, t.step(), history);
    } catch (const std::exception& e) {
      error = e.what();
    }
    train::agree(t.world_comm(), error, "epx-train: opening log.metrics");
  }
  if (root) {
    std::printf(
        "epx-train: %lld parameters (%d layers, hidden %d, %d experts top-%d), %s%s, "
        "global batch %lld x %d tokens, %lld training tokens (unigram entropy %.3f)\n",
        static_cast<long long>(model::Model::parameter_count(cfg.model)), cfg.model.num_layers,
        cfg.model.hidden_size, cfg.model.num_experts, cfg.model.top_k,
        train::grid_text(cfg.parallel).c_str(), cfg.parallel.fp8_dispatch ? ", fp8 dispatch" : "",
        static_cast<long long>(t.global_batch()), tc.seq_len,
        static_cast<long long>(t.data().train_tokens()), history.unigram_entropy);
    const train::BalancerConfig& bc = cfg.balancer;
    if (bc.enabled)
      std::printf(
          "epx-train: balancer on: %d slots per MoE layer (%d redundant) over each EP group "
          "of %d ranks, a new placement every %d steps from the last %d steps' loads, "
          "policy %s\n",
          cfg.model.num_experts + bc.redundant_experts, bc.redundant_experts, cfg.parallel.ep,
          bc.every, bc.window, bc.policy.c_str());
    if (!resume_dir.empty())
      std::printf("epx-train: resumed from %s at step %lld\n", resume_dir.c_str(),
                  static_cast<long long>(t.step()));
    std::fflush(stdout);
  }

  double last_eval = -1, tokens_per_s_sum = 0;
  std::int64_t timed = 0, last_saved = -1;
  std::string checkpoint;
  train::StepResult r;
  while (t.step() < tc.max_steps) {
    r = t.train_step();
    history.add(r);
    if (r.step > 1) tokens_per_s_sum += r.tokens_per_s, ++timed;  // step 1 warms up
    double eval = -1;
    if (tc.eval_every > 0 && r.step % tc.eval_every == 0 && tc.eval_batches > 0) {
      eval = last_eval = t.eval_loss();
      history.eval_steps.push_back(r.step);
      history.eval_losses.push_back(eval);
    }
    if (root) {
      metrics.write(r, eval);
      if (r.step % cfg.log.every == 0 || r.step == tc.max_steps) {
        std::printf("%s\n", train::progress_line(r, tc.max_steps).c_str());
        if (eval >= 0)
          std::printf("eval step %lld | loss %.4f\n", static_cast<long long>(r.step), eval);
      }
      if (!r.timeline.empty())
        std::printf(
            "timeline of step %lld: %.1f ms measured, %.1f ms simulated from its op costs "
            "(%+.1f %%), %.1f ms replayed from each op's measured time (the rest: %.2f ms per "
            "hand-off), written to %s\n",
            static_cast<long long>(r.step), r.timeline_measured_ms, r.timeline_simulated_ms,
            100.0 * (r.timeline_measured_ms - r.timeline_simulated_ms) /
                std::max(r.timeline_simulated_ms, 1e-9),
            r.timeline_replayed_ms, r.timeline_handoff_ms, r.timeline.c_str());
      for (const train::RebalanceReport& b : r.rebalances)
        std::printf("%s\n", train::rebalance_line(b).c_str());
      std::fflush(stdout);
    }
    if (tc.checkpoint_every > 0 && r.step % tc.checkpoint_every == 0) {
      checkpoint = t.save_checkpoint();
      last_saved = r.step;
    }
  }
  if (last_saved != t.step()) checkpoint = t.save_checkpoint();
  if (tc.eval_batches > 0 && (history.eval_steps.empty() || history.eval_steps.back() != t.step())) {
    last_eval = t.eval_loss();
    history.eval_steps.push_back(t.step());
    history.eval_losses.push_back(last_eval);
  }
  if (root) {
    const std::string report = !cfg.log.report.empty()
                                   ? cfg.log.report
                                   : (fs::path(tc.checkpoint_dir) / "report.svg").string();
    train::write_report_svg(report, history, "epx-train " + a.config);
    const double tps = timed > 0 ? tokens_per_s_sum / timed : r.tokens_per_s;
    std::printf("epx-train: OK, step %lld/%d, train loss %.4f, eval loss %.4f, %.0f tokens/s, "
                "checkpoint %s, report %s\n",
                static_cast<long long>(t.step()), tc.max_steps,
                history.losses.empty() ? 0.0 : history.losses.back(), last_eval, tps,
                checkpoint.c_str(), report.c_str());
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const Args a = parse_args(argc, argv);
  if (!a.export_dir.empty()) return export_weights(a);
  // Threads: DualPipe's FB overlap runs a second one that calls epx (and
  // MPI, between nodes) while the first does (parallel.fb_overlap).
  int provided = MPI_THREAD_SINGLE;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
  int rc = 0;
  try {
    rc = run_training(a);
  } catch (const Error& e) {
    // Agreed errors (a bad config) reach every rank with the same words:
    // rank 0 prints them. Any other failure is printed where it happened and
    // ends the job, so no rank waits on one that stopped.
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    if (e.code() == ErrorCode::InvalidArgument) {
      if (rank == 0) std::fprintf(stderr, "epx-train: FAILED: %s\n", e.what());
      MPI_Finalize();
      return 1;
    }
    std::fprintf(stderr, "epx-train: FAILED: %s\n", e.what());
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "epx-train: FAILED: %s\n", e.what());
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  MPI_Finalize();
  return rc;
}
