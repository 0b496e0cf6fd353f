#include "launch/train_bench.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>

#include <cblas.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "core/stopwatch.hpp"
#include "train/exchange.hpp"
#include "train/pipeline_timeline.hpp"
#include "train/trainer.hpp"

namespace epx::launch {

double model_flops_per_token(const train::ModelConfig& m, int seq_len) {
  const double H = m.hidden_size, V = m.vocab_size;
  double active = 0;
  for (int l = 0; l < m.num_layers; ++l) {
    active += 4 * H * H;  // q, k, v, o
    if (l < m.first_k_dense) {
      active += 3 * H * m.intermediate_size;
    } else {
      active += m.num_experts * H;                                      // router
      active += 3 * H * m.moe_intermediate_size * (m.num_shared_experts + m.top_k);
    }
  }
  active += V * H;  // the LM head
  return 6 * active + 12.0 * m.num_layers * H * seq_len;
}

namespace {

// GFLOP/s of one thread's sgemm on n x n x n, best of a few (every rank at once).
double sgemm_gflops(int n) {
  std::vector<float> a(static_cast<std::size_t>(n) * n, 0.5f), b(a.size(), 0.25f), c(a.size());
  double best = 0;
  for (int rep = 0; rep < 4; ++rep) {
    const auto t0 = core::SteadyClock::now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1.0f, a.data(), n, b.data(), n,
                0.0f, c.data(), n);
    best = std::max(best, 2.0 * n * n * n / core::seconds_since(t0) / 1e9);
  }
  return best;
}

using core::median;

// Runs the PyTorch reference and returns its tokens/s (0 on failure, with a note).
double torch_tokens_per_s(const TrainBenchOptions& o, int threads) {
  // OpenBLAS under torch keeps its own thread pool: pin it to the same count.
  const std::string t = std::to_string(threads);
  std::string cmd = "OPENBLAS_NUM_THREADS=" + t + " OMP_NUM_THREADS=" + t + " /usr/bin/python3 '" +
                    o.torch_script + "' --config '" + o.config_path +
                    "' --steps " + std::to_string(o.steps) + " --threads " + std::to_string(threads);
  for (const std::string& s : o.sets) cmd += " --set '" + s + "'";
  cmd += " 2>/dev/null";
  std::unique_ptr<FILE, int (*)(FILE*)> p(popen(cmd.c_str(), "r"), pclose);
  if (!p) return 0;
  std::string out;
  char buf[4096];
  while (std::fgets(buf, sizeof buf, p.get())) out += buf;
  const auto brace = out.rfind('{');
  if (brace == std::string::npos) return 0;
  try {
    return nlohmann::json::parse(out.substr(brace)).at("tokens_per_s").get<double>();
  } catch (const std::exception&) {
    return 0;
  }
}

// The pipeline's side of the bench (pp > 1), from the timed steps.
struct PipelineSplit {
  double pipeline_ms = 0, ops_ms = 0;  // the slowest rank's medians
  // The same rank's executor step in parts (pipeline::ExecutorStats).
  double exec_ops_ms = 0, copy_sum_ms = 0, agree_close_ms = 0;
  bool two_copies = false;             // DualPipe: every stage on two ranks
  double simulated_ms = 0;             // pipeline::simulate with the op costs per rank and chunk
  double simulated_one_cost_ms = 0;    // the same with one cost per kind for every stage
  bool fb_overlapped = false;          // the FB units ran their halves overlapped
  // Medians over the timed steps and the pipelines (train::replay_step).
  double span_ms = 0, replayed_ms = 0, handoff_ms = 0;
  double waited_ms = 0, waits = 0;  // the measured hand-off (train::StepReplay)
  double ready_gap_ms = 0;          // the mean gap before an op whose inputs were there
  double simulated_waited_ms = 0;   // simulated with it as the p2p latency
  bool one_host = false;  // the replay needs the ranks' op times on one clock
  pipeline::Costs costs;
  train::OpTotals totals;  // over the world and the timed steps
};

// Every rank's op times of every timed step to every rank, each pipeline's
// steps replayed from them (they share the host's clock).
void replay_steps(PipelineSplit& p, const pipeline::Schedule& schedule,
                  const std::vector<train::StepResult>& steps, const train::Comm& comm) {
  // Op times from different hosts' steady clocks cannot be set side by side.
  char host[256] = {};
  gethostname(host, sizeof host - 1);
  const std::vector<std::int64_t> hosts = train::allgather(
      comm, std::vector<std::int64_t>{static_cast<std::int64_t>(std::hash<std::string>{}(host))},
      "bench: hosts");
  p.one_host =
      std::all_of(hosts.begin(), hosts.end(), [&](std::int64_t h) { return h == hosts[0]; });
  if (!p.one_host) return;
  std::size_t most = 0;
  for (const auto& ops : schedule.ops) most = std::max(most, ops.size());
  const std::size_t per_step = 2 * most, row = 2 + steps.size() * per_step;
  std::vector<double> mine(row, 0.0);
  if (!steps.empty()) mine[0] = steps[0].pipeline_rank, mine[1] = steps[0].pipeline_index;
  for (std::size_t k = 0; k < steps.size(); ++k)
    for (std::size_t i = 0; i < steps[k].op_times.size() && i < most; ++i) {
      mine[2 + k * per_step + 2 * i] = steps[k].op_times[i].start;
      mine[2 + k * per_step + 2 * i + 1] = steps[k].op_times[i].end;
    }
  const std::vector<double> all = train::allgather(comm, mine, "bench: op times");
  const std::size_t ranks = all.size() / row;
  int pipelines = 0;
  for (std::size_t q = 0; q < ranks; ++q)
    pipelines = std::max(pipelines, static_cast<int>(all[q * row + 1]) + 1);
  std::vector<double> span, again, handoff, waited, waits, gaps;
  for (int pl = 0; pl < pipelines; ++pl)
    for (std::size_t k = 0; k < steps.size(); ++k) {
      std::vector<std::vector<pipeline::OpTime>> times(schedule.ops.size());
      for (std::size_t q = 0; q < ranks; ++q) {
        const double* at = &all[q * row];
        if (static_cast<int>(at[1]) != pl) continue;
        const auto r = static_cast<std::size_t>(at[0]);
        for (std::size_t i = 0; i < schedule.ops[r].size(); ++i)
          times[r].push_back({at[2 + k * per_step + 2 * i], at[2 + k * per_step + 2 * i + 1]});
      }
      const train::StepReplay one = train::replay_step(schedule, times);
      span.push_back(one.span_ms);
      again.push_back(one.replayed_ms);
      handoff.push_back(one.handoff_ms);
      waited.push_back(one.waited_ms);
      waits.push_back(one.waits);
      gaps.push_back(one.ready_gap_ms);
    }
  p.span_ms = median(span);
  p.replayed_ms = median(again);
  p.handoff_ms = median(handoff);
  p.waited_ms = median(waited);
  p.waits = median(waits);
  p.ready_gap_ms = median(gaps);
}

PipelineSplit pipeline_split(const train::Trainer& t, const std::vector<train::StepResult>& steps,
                             int slowest) {
  PipelineSplit p;
  std::vector<double> pipe, ops, exec_ops, copy_sum, agree_close;
  const pipeline::Schedule& schedule = *t.schedule();
  // Per (pipeline rank, local chunk), laid out flat so that one sum over the
  // world adds the dp replicas of every cell; the world's totals are the
  // cells' sum.
  std::vector<std::vector<train::OpTotals>> by_cell;
  for (const std::vector<int>& chunks : schedule.stage_of) by_cell.emplace_back(chunks.size());
  for (const train::StepResult& r : steps) {
    pipe.push_back(r.pipeline_seconds * 1e3);
    ops.push_back(r.ops_seconds * 1e3);
    exec_ops.push_back(r.executor.ops_ms);
    copy_sum.push_back(r.executor.copy_sum_ms);
    agree_close.push_back(r.executor.agree_ms + r.executor.close_ms);
    auto& cells = by_cell[static_cast<std::size_t>(r.pipeline_rank)];
    for (std::size_t c = 0; c < cells.size() && c < r.chunk_ops.size(); ++c)
      cells[c].add(r.chunk_ops[c]);
  }
  const train::Comm& comm = t.world_comm();
  const std::vector<double> all =
      train::allgather(comm,
                       std::vector<double>{median(pipe), median(ops), median(exec_ops),
                                           median(copy_sum), median(agree_close)},
                       "bench: pipeline times");
  const double* slow = &all[5 * static_cast<std::size_t>(slowest)];
  p.pipeline_ms = slow[0];
  p.ops_ms = slow[1];
  p.exec_ops_ms = slow[2];
  p.copy_sum_ms = slow[3];
  p.agree_close_ms = slow[4];
  std::vector<double> flat;
  for (const auto& cells : by_cell)
    for (const train::OpTotals& o : cells) {
      const std::vector<double> f = o.flat();
      flat.insert(flat.end(), f.begin(), f.end());
    }
  flat = train::sum_over_ranks(comm, flat, "bench: op costs per rank and chunk");
  const std::size_t n = train::OpTotals().flat().size();
  std::size_t at = 0;
  for (auto& cells : by_cell)
    for (train::OpTotals& o : cells) {
      o = train::OpTotals::from_flat(
          std::vector<double>(flat.begin() + static_cast<std::ptrdiff_t>(at),
                              flat.begin() + static_cast<std::ptrdiff_t>(at + n)));
      at += n;
      p.totals.add(o);
    }
  p.costs = p.totals.costs();
  std::vector<std::vector<pipeline::Costs>> cells = train::cell_costs(by_cell, p.totals);
  const pipeline::Simulation sim = pipeline::simulate(schedule, cells);
  p.simulated_ms = sim.makespan;
  replay_steps(p, schedule, steps, comm);
  if (p.one_host) {
    // The simulator's p2p from the hand-offs measured in the steps (not the
    // fitted one, which would make the comparison circular).
    for (auto& rank : cells)
      for (pipeline::Costs& c : rank) c.p2p = p.waited_ms;
    p.simulated_waited_ms = pipeline::simulate(schedule, cells).makespan;
  }
  p.two_copies = sim.param_copies > 1;
  p.simulated_one_cost_ms = pipeline::simulate(schedule, p.costs).makespan;
  p.fb_overlapped = t.fb_overlapped();
  return p;
}

void print_pipeline_split(const PipelineSplit& p, const train::Config& c, double step_ms,
                          double ep_ms, double dp_ms) {
  using pipeline::OpKind;
  const double bubble = p.pipeline_ms - p.ops_ms;
  std::printf(
      "  step split (ms, slowest rank): compute %.1f, EP comm exposed %.1f, PP bubble %.1f, "
      "DP all-reduce %.1f, other %.1f\n",
      p.ops_ms - ep_ms, ep_ms, bubble, dp_ms, step_ms - p.pipeline_ms - dp_ms);
  const double gap = 100 * (p.pipeline_ms - p.simulated_ms) / p.simulated_ms;
  std::printf(
      "  %s: %.1f ms measured in the executor, %.1f ms simulated from the op costs measured per "
      "rank and chunk (means F %.2f, B %.2f, W %.2f, FB %.2f ms per chunk): %+.1f %% (target: "
      "within "
      "10 %%); with one cost per kind for every stage %.1f ms (%+.1f %%)\n",
      c.parallel.schedule.c_str(), p.pipeline_ms, p.simulated_ms, p.costs.f, p.costs.b, p.costs.w,
      p.costs.fb, gap, p.simulated_one_cost_ms,
      100 * (p.pipeline_ms - p.simulated_one_cost_ms) / p.simulated_one_cost_ms);
  char copies[96] = "";
  if (p.two_copies)
    std::snprintf(copies, sizeof copies, ", the sum of DualPipe's two weight copies %.1f ms",
                  p.copy_sum_ms);
  std::printf(
      "  the executor's %.1f ms: its ops %.1f ms%s, agreements and last sends %.1f ms (the "
      "simulator models the ops: %+.1f %% against them)\n",
      p.pipeline_ms, p.exec_ops_ms, copies, p.agree_close_ms,
      100 * (p.exec_ops_ms - p.simulated_ms) / p.simulated_ms);
  if (p.one_host) {
    std::printf(
        "  the ops replayed at their measured times, no latency between ranks: %.1f ms, against "
        "their span of %.1f ms (%+.1f %%: %.2f ms per hand-off between ranks)\n",
        p.replayed_ms, p.span_ms, 100 * (p.span_ms - p.replayed_ms) / p.replayed_ms, p.handoff_ms);
    std::printf(
        "  hand-offs measured between ranks (an op's start less its input's end, where it waited "
        "for it): median %.2f ms over %.0f per step; simulated with that latency: %.1f ms, %+.1f "
        "%% against the executor; between ops with only local inputs: %.3f ms each\n",
        p.waited_ms, p.waits, p.simulated_waited_ms,
        100 * (p.pipeline_ms - p.simulated_waited_ms) / p.simulated_waited_ms, p.ready_gap_ms);
  } else {
    std::printf(
        "  the ops' replay: not measured, the ranks run on more than one host (their "
        "steady clocks differ)\n");
  }
  const train::OpTotals& o = p.totals;
  if (o.count[static_cast<int>(OpKind::FB)] > 0) {
    // Hidden: the time one half spent in a comm call while the other held
    // the compute turn (0 when the halves run one after the other). Comm
    // adds up both halves' Buffer calls.
    const double fb = o.mean(OpKind::FB, 0), f = o.mean(OpKind::F, 0), b = p.costs.b;
    const double comm = o.mean_ep(OpKind::FB), compute = o.mean_compute(OpKind::FB);
    const double hidden = o.mean_hidden(OpKind::FB);
    std::printf(
        "  FB units (%s): %.2f ms each (an F and a B alone: %.2f ms); compute %.2f ms, EP comm "
        "%.2f ms, of which hidden behind the other half's compute %.2f ms = %.0f %%\n",
        p.fb_overlapped ? "overlapped" : "halves in turn", fb, f + b, compute, comm, hidden,
        comm > 0 ? 100 * hidden / comm : 0.0);
  }
}

}  // namespace

int run_train_bench(const train::Config& config, Group& world, const TrainBenchOptions& o) {
  train::Config c = config;
  c.train.max_steps = std::max(c.train.max_steps, o.steps + o.warmup);
  train::Trainer t(c, world);
  std::vector<double> total, ep, dp;
  std::vector<train::StepResult> timed;
  for (int i = 0; i < o.steps + o.warmup; ++i) {
    train::StepResult r = t.train_step();
    if (i < o.warmup) continue;
    total.push_back(r.seconds);
    ep.push_back(r.ep_seconds);
    dp.push_back(r.dp_seconds);
    timed.push_back(std::move(r));
  }
  // The slowest rank sets the step: take each rank's medians, then the max.
  const train::Comm& comm = t.world_comm();
  const std::vector<double> mine = {median(total), median(ep), median(dp)};
  const std::vector<double> all = train::allgather(comm, mine, "bench: step times");
  double step = 0, ep_s = 0, dp_s = 0;
  int slowest = 0;
  for (int q = 0; q < world.size(); ++q)
    if (all[3 * q] > step)
      step = all[3 * q], ep_s = all[3 * q + 1], dp_s = all[3 * q + 2], slowest = q;
  PipelineSplit pipe;
  if (t.schedule()) pipe = pipeline_split(t, timed, slowest);
  const double peak_mine = sgemm_gflops(1024);
  const std::vector<double> peaks = train::allgather(comm, std::vector<double>{peak_mine}, "bench: sgemm");
  double peak = 0;
  for (const double p : peaks) peak += p / static_cast<double>(peaks.size());

  const double tokens = static_cast<double>(t.global_batch()) * c.train.seq_len;
  const double tps = tokens / step;
  const double fpt = model_flops_per_token(c.model, c.train.seq_len);
  const double per_rank = tps * fpt / world.size() / 1e9;
  double torch_tps = 0;
  if (world.rank() == 0 && world.size() == 1 && !o.torch_script.empty())
    torch_tps = torch_tokens_per_s(o, c.train.threads);
  if (world.rank() != 0) return 0;

  std::printf("epx-train --bench: %s, %s%s, %d thread(s) per rank, %d timed steps of %.0f tokens\n",
              o.config_path.c_str(), train::grid_text(c.parallel).c_str(),
              c.balancer.enabled ? ", balancer on" : "", c.train.threads, o.steps, tokens);
  std::printf("  %.0f tokens/s, %.1f ms/step (compute %.1f, ep %.1f, dp %.1f), slowest rank's median\n",
              tps, step * 1e3, (step - ep_s - dp_s) * 1e3, ep_s * 1e3, dp_s * 1e3);
  if (t.schedule()) print_pipeline_split(pipe, c, step * 1e3, ep_s * 1e3, dp_s * 1e3);
  std::printf("  %.2f MFLOP/token (6 x active params + 12 L H seq): %.2f GFLOP/s per rank\n", fpt / 1e6,
              per_rank);
  std::printf("  sgemm peak, 1 thread, 1024^3, every rank at once: %.2f GFLOP/s per rank -> %.0f %% of peak\n",
              peak, 100 * per_rank / peak);
  if (torch_tps > 0)
    std::printf("  PyTorch eager, same model, batch and threads: %.0f tokens/s -> epx %.2fx\n", torch_tps,
                tps / torch_tps);
  else if (!o.torch_script.empty() && world.size() == 1)
    std::printf("  PyTorch eager: not measured (%s did not run; is python3-torch installed?)\n",
                o.torch_script.c_str());
  if (o.json) {
    nlohmann::json j = {{"config", o.config_path}, {"dp", c.parallel.dp}, {"ep", c.parallel.ep},
                        {"threads", c.train.threads}, {"tokens_per_s", tps}, {"ms_per_step", step * 1e3},
                        {"ms_ep", ep_s * 1e3}, {"ms_dp", dp_s * 1e3}, {"flops_per_token", fpt},
                        {"gflops_per_rank", per_rank}, {"sgemm_peak_gflops", peak},
                        {"fraction_of_peak", per_rank / peak}};
    if (t.schedule()) {
      j["pp"] = c.parallel.pp;
      j["schedule"] = c.parallel.schedule;
      j["ms_pipeline"] = pipe.pipeline_ms;
      j["ms_bubble"] = pipe.pipeline_ms - pipe.ops_ms;
      j["ms_simulated"] = pipe.simulated_ms;
      j["ms_simulated_one_cost"] = pipe.simulated_one_cost_ms;
      j["ms_executor_ops"] = pipe.exec_ops_ms;
      j["ms_copy_sum"] = pipe.copy_sum_ms;
      j["ms_agree_close"] = pipe.agree_close_ms;
      if (pipe.one_host) {
        j["ms_ops_span"] = pipe.span_ms;
        j["ms_replayed"] = pipe.replayed_ms;
        j["ms_handoff"] = pipe.handoff_ms;
        j["ms_handoff_measured"] = pipe.waited_ms;
        j["ms_simulated_measured_handoff"] = pipe.simulated_waited_ms;
        j["ms_ready_gap"] = pipe.ready_gap_ms;
      }
      if (pipe.totals.count[static_cast<int>(pipeline::OpKind::FB)] > 0) {
        j["fb_overlap"] = pipe.fb_overlapped;  // as run, not as asked
        j["ms_fb_unit"] = pipe.totals.mean(pipeline::OpKind::FB, 0);
        j["ms_fb_comm"] = pipe.totals.mean_ep(pipeline::OpKind::FB);
        j["ms_fb_hidden"] = pipe.totals.mean_hidden(pipeline::OpKind::FB);
      }
    }
    if (torch_tps > 0) j["torch_tokens_per_s"] = torch_tps, j["speedup_vs_torch"] = tps / torch_tps;
    std::printf("%s\n", j.dump().c_str());
  }
  std::fflush(stdout);
  return 0;
}

}  // namespace epx::launch
