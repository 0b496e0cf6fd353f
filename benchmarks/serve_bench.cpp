// `epx-bench serve`: drives a real epx-serve over HTTP (a running one at
// --url, or one it launches with `epxrun -n --ranks -- epx-serve --model ...`)
// with 1, 8 and 32 concurrent streaming clients, random prompt and output
// lengths from --seed, and reports TTFT and TPOT (p50, p99), requests/s and
// output tokens/s. In the same run it measures the machine's limits (a
// cblas_sgemm peak on matrices larger than the last-level cache, a streaming
// read bandwidth) and puts against them a 512-token prefill (FLOP/s from the
// model's cost on GET /v1/models) and batch-1 decode (bytes read per token,
// active weights + KV, x tokens/s). Runs on one rank: the client.
#include <mpi.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <iomanip>
#include <iostream>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "benchmarks/collective.hpp"
#include "benchmarks/machine_limits.hpp"
#include "benchmarks/options.hpp"
#include "benchmarks/registry.hpp"
#include "benchmarks/serve_client.hpp"
#include "benchmarks/timing.hpp"

namespace epx::bench {

namespace {

const char* const kSummary =
    "epx-serve over HTTP: TTFT/TPOT at 1, 8, 32 clients; prefill vs GEMM peak, decode vs bandwidth";

OptionSet make_options() {
  OptionSet o("serve");
  o.add_string("url", "", "",
               "a running epx-serve (http://HOST:PORT); without it, --model launches one");
  o.add_string("model", "", "",
               "launch `epxrun -n RANKS -- epx-serve --model MODEL --port 0` (and stop it)");
  o.add_string("config", "", "", "with --model: its --config");
  o.add_int("ranks", 1, 1, 1024, "with --model: the server's ranks");
  o.add_string("serve-args", "", "", "with --model: more epx-serve flags, space-separated");
  o.add_string("clients", "1,8,32", "", "concurrent client counts, comma-separated");
  o.add_int("requests", 0, 0, 1 << 20, "requests per client count (0: 2 x clients, at least 8)");
  o.add_int("prompt-min", 8, 1, 1 << 20, "shortest random prompt (tokens)");
  o.add_int("prompt-max", 64, 1, 1 << 20, "longest random prompt");
  o.add_int("output-min", 8, 1, 1 << 20, "fewest generated tokens");
  o.add_int("output-max", 64, 1, 1 << 20, "most generated tokens");
  o.add_int("seed", 1, 0, 1 << 30, "seeds the prompts and lengths");
  o.add_int("prefill-tokens", 512, 0, 1 << 20,
            "the prefill roofline's prompt (0: skip the rooflines)");
  o.add_int("decode-tokens", 64, 2, 1 << 20, "tokens the batch-1 decode roofline generates");
  o.add_int("decode-prompt", 16, 1, 1 << 20, "its prompt");
  o.add_int("roofline-iters", 3, 1, 100, "repeats of each roofline request (the median is kept)");
  o.add_int("gemm-n", 0, 0, 1 << 16,
            "the peak's GEMM size (0: the smallest past the last-level cache)");
  o.add_int("bandwidth-mib", 0, 0, 1 << 20,
            "bytes of the bandwidth's read (0: 2 x the last-level cache, >= 1 GiB)");
  o.add_int("threads", 0, 0, 1024,
            "threads of the peak and bandwidth (0: the server's ranks, at most the cores)");
  o.add_flag("json", "print one JSON object instead of the table");
  return o;
}

std::vector<int> parse_clients(const std::string& s) {
  std::vector<int> out;
  std::stringstream in(s);
  std::string w;
  while (std::getline(in, w, ',')) {
    char* end = nullptr;
    const long n = std::strtol(w.c_str(), &end, 10);
    if (w.empty() || *end || n < 1 || n > 4096)
      throw UsageError("--clients = '" + s + "', expected counts in [1, 4096], comma-separated");
    out.push_back(static_cast<int>(n));
  }
  if (out.empty()) throw UsageError("--clients is empty");
  return out;
}

std::vector<std::string> split_words(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

struct Level {
  int clients = 0, requests = 0, failed = 0;
  std::string first_error;
  double seconds = 0;
  std::int64_t output_tokens = 0;
  double ttft_p50 = 0, ttft_p99 = 0, tpot_p50 = 0, tpot_p99 = 0;
  StepTimes steps;  // the server's decode steps during the level
};

// `clients` threads share the requests 0..n-1, each with its own seeded prompt and length.
Level run_level(const Endpoint& at, int clients, int n, const OptionSet& o, int vocab) {
  struct Job {
    std::vector<std::int32_t> prompt;
    int max_tokens = 0;
  };
  std::vector<Job> jobs(static_cast<std::size_t>(n));
  std::mt19937_64 rng(static_cast<std::uint64_t>(o.get_int("seed")) * 1000003u + clients);
  std::uniform_int_distribution<std::int64_t> plen(o.get_int("prompt-min"),
                                                   o.get_int("prompt-max"));
  std::uniform_int_distribution<std::int64_t> olen(o.get_int("output-min"),
                                                   o.get_int("output-max"));
  std::uniform_int_distribution<int> tok(0, vocab - 1);
  for (Job& j : jobs) {
    j.prompt.resize(static_cast<std::size_t>(plen(rng)));
    for (std::int32_t& t : j.prompt) t = tok(rng);
    j.max_tokens = static_cast<int>(olen(rng));
  }
  std::vector<Completion> done(jobs.size());
  std::atomic<int> next{0};
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::thread> pool;
  for (int c = 0; c < clients; ++c)
    pool.emplace_back([&] {
      for (int i; (i = next.fetch_add(1)) < n;)
        done[static_cast<std::size_t>(i)] =
            stream_completion(at, jobs[static_cast<std::size_t>(i)].prompt,
                              jobs[static_cast<std::size_t>(i)].max_tokens);
    });
  for (std::thread& t : pool) t.join();
  Level l;
  l.clients = clients;
  l.requests = n;
  l.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::vector<double> ttft, tpot;
  for (const Completion& c : done) {
    if (!c.ok) {
      if (l.failed++ == 0) l.first_error = c.error;
      continue;
    }
    l.output_tokens += c.tokens;
    ttft.push_back(c.ttft);
    if (c.tokens > 1) tpot.push_back((c.last - c.ttft) / static_cast<double>(c.tokens - 1));
  }
  if (!ttft.empty()) {
    l.ttft_p50 = percentile(ttft, 50);
    l.ttft_p99 = percentile(ttft, 99);
  }
  if (!tpot.empty()) {
    l.tpot_p50 = percentile(tpot, 50);
    l.tpot_p99 = percentile(tpot, 99);
  }
  return l;
}

struct Roofline {
  bool run = false;
  int prefill_tokens = 0, decode_prompt = 0, decode_tokens = 0;
  double prefill_s = 0, prefill_flops = 0;   // median TTFT; FLOPs of that prefill
  double decode_tpot = 0, decode_bytes = 0;  // median TPOT; bytes read per token
};

double prefill_flops(const nlohmann::json& m, std::int64_t p) {
  const double P = static_cast<double>(p);
  return P * m["matmul_flops_per_token"].get<double>() +
         m["attention_flops_per_context"].get<double>() * P * (P + 1) / 2 +
         m["lm_head_flops"].get<double>();
}

Roofline run_rooflines(const Endpoint& at, const OptionSet& o, const nlohmann::json& m) {
  Roofline r;
  r.prefill_tokens = static_cast<int>(o.get_int("prefill-tokens"));
  if (r.prefill_tokens == 0) return r;
  r.run = true;
  r.decode_prompt = static_cast<int>(o.get_int("decode-prompt"));
  r.decode_tokens = static_cast<int>(o.get_int("decode-tokens"));
  const int vocab = m["vocab_size"].get<int>();
  std::mt19937_64 rng(static_cast<std::uint64_t>(o.get_int("seed")) + 77);
  std::uniform_int_distribution<int> tok(0, vocab - 1);
  const auto random_prompt = [&](int n) {
    std::vector<std::int32_t> p(static_cast<std::size_t>(n));
    for (std::int32_t& t : p) t = tok(rng);
    return p;
  };
  std::vector<double> ttft, tpot;
  for (std::int64_t i = 0; i < o.get_int("roofline-iters"); ++i) {
    const Completion c = stream_completion(at, random_prompt(r.prefill_tokens), 1);
    if (!c.ok) throw std::runtime_error("the prefill roofline's request failed: " + c.error);
    ttft.push_back(c.ttft);
    const Completion d = stream_completion(at, random_prompt(r.decode_prompt), r.decode_tokens);
    if (!d.ok) throw std::runtime_error("the decode roofline's request failed: " + d.error);
    tpot.push_back((d.last - d.ttft) / (r.decode_tokens - 1));
  }
  r.prefill_s = median(ttft);
  r.prefill_flops = prefill_flops(m, r.prefill_tokens);
  r.decode_tpot = median(tpot);
  // The decode tokens after the first see contexts prompt+1 .. prompt+n-1: their mean.
  const double context = r.decode_prompt + r.decode_tokens / 2.0;
  r.decode_bytes =
      m["active_weight_bytes"].get<double>() + m["kv_bytes_per_position"].get<double>() * context;
  return r;
}

int run_serve_bench(MPI_Comm comm, const std::vector<std::string>& args) {
  OptionSet o = make_options();
  o.parse(args);
  if (comm_size(comm) != 1)
    throw UsageError(
        "epx-bench serve is the client: run it on one rank (the server's are --ranks)");
  const bool json = o.flag("json");
  const std::vector<int> levels = parse_clients(o.get_string("clients"));
  if (o.get_string("url").empty() == o.get_string("model").empty())
    throw UsageError("give --url of a running epx-serve, or --model to launch one (not both)");
  if (o.get_int("prompt-min") > o.get_int("prompt-max") ||
      o.get_int("output-min") > o.get_int("output-max"))
    throw UsageError("--prompt-min/--output-min must not exceed --prompt-max/--output-max");

  // The machine's limits first, while no request runs.
  const std::int64_t llc = last_level_cache_bytes();
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  const int requested_threads = static_cast<int>(o.get_int("threads"));
  std::unique_ptr<LaunchedServer> server;
  Endpoint at;
  int ranks = 0;
  const auto machine = [&](int threads, GemmPeak& g, Bandwidth& b) {
    const int n =
        o.get_int("gemm-n") > 0 ? static_cast<int>(o.get_int("gemm-n")) : gemm_size_past(llc);
    std::size_t bytes = static_cast<std::size_t>(o.get_int("bandwidth-mib")) << 20;
    if (bytes == 0)
      bytes = std::max<std::size_t>(std::size_t{1} << 30, 2 * static_cast<std::size_t>(llc));
    if (!json)
      std::cerr << "epx-bench serve: GEMM peak (n " << n << ", " << threads
                << " thread(s)) and read bandwidth (" << (bytes >> 20) << " MiB)...\n";
    g = measure_gemm_peak(n, threads);
    b = measure_read_bandwidth(bytes, threads, 3);
  };
  GemmPeak gemm;
  Bandwidth bw;
  int threads = 0;
  if (!o.get_string("model").empty()) {
    ranks = static_cast<int>(o.get_int("ranks"));
    threads =
        requested_threads > 0 ? requested_threads : std::min<int>(ranks, static_cast<int>(cores));
    machine(threads, gemm, bw);  // before the server holds memory and cores
    std::vector<std::string> sa = {"--model", o.get_string("model")};
    if (!o.get_string("config").empty()) {
      sa.push_back("--config");
      sa.push_back(o.get_string("config"));
    }
    for (const std::string& w : split_words(o.get_string("serve-args"))) sa.push_back(w);
    server = std::make_unique<LaunchedServer>(ranks, sa, 1800);
    at = server->endpoint();
  } else {
    at = parse_url(o.get_string("url"));
  }
  const nlohmann::json models = get_json(at, "/v1/models");
  const nlohmann::json& m = models["data"][0]["epx"];
  if (ranks == 0) {
    ranks = m["ranks"].get<int>();
    threads =
        requested_threads > 0 ? requested_threads : std::min<int>(ranks, static_cast<int>(cores));
    machine(threads, gemm, bw);  // the server is idle
  }

  const Roofline roof = run_rooflines(at, o, m);
  std::vector<Level> results;
  for (const int c : levels) {
    const int n =
        o.get_int("requests") > 0 ? static_cast<int>(o.get_int("requests")) : std::max(8, 2 * c);
    if (!json) std::cerr << "epx-bench serve: " << c << " client(s), " << n << " requests...\n";
    const StepTimes before = decode_step_times(get_text(at, "/metrics"));
    results.push_back(run_level(at, c, n, o, m["vocab_size"].get<int>()));
    results.back().steps = decode_step_times(get_text(at, "/metrics")) - before;
  }
  int server_status = 0;
  if (server) server_status = server->stop();

  int failed = 0;
  for (const Level& l : results) failed += l.failed;
  const double prefill_fps = roof.run ? roof.prefill_flops / roof.prefill_s : 0;
  const double decode_bps = roof.run ? roof.decode_bytes / roof.decode_tpot : 0;
  if (json) {
    nlohmann::json j = {
        {"model", models["data"][0]["id"]},
        {"ranks", ranks},
        {"active_weight_bytes", m["active_weight_bytes"]},
        {"total_weight_bytes", m["total_weight_bytes"]},
        {"last_level_cache_bytes", llc},
        {"gemm", {{"n", gemm.n}, {"threads", gemm.threads}, {"flops", gemm.flops}}},
        {"bandwidth",
         {{"bytes", bw.bytes}, {"threads", bw.threads}, {"bytes_per_s", bw.bytes_per_s}}},
        {"server_exit", server_status}};
    if (roof.run) {
      j["prefill"] = {{"tokens", roof.prefill_tokens},
                      {"seconds", roof.prefill_s},
                      {"flops", roof.prefill_flops},
                      {"flops_per_s", prefill_fps},
                      {"of_gemm_peak", prefill_fps / gemm.flops}};
      j["decode_batch1"] = {{"tpot", roof.decode_tpot},
                            {"bytes_per_token", roof.decode_bytes},
                            {"bytes_per_s", decode_bps},
                            {"of_bandwidth", decode_bps / bw.bytes_per_s}};
    }
    j["levels"] = nlohmann::json::array();
    for (const Level& l : results) {
      nlohmann::json steps = nlohmann::json::object();
      for (std::size_t i = 0; i < l.steps.modes.size(); ++i)
        if (l.steps.count[i] > 0)
          steps[l.steps.modes[i]] = {{"steps", l.steps.count[i]},
                                     {"mean_seconds", l.steps.seconds[i] / l.steps.count[i]}};
      j["levels"].push_back({{"clients", l.clients},
                             {"requests", l.requests},
                             {"failed", l.failed},
                             {"ttft_p50", l.ttft_p50},
                             {"ttft_p99", l.ttft_p99},
                             {"tpot_p50", l.tpot_p50},
                             {"tpot_p99", l.tpot_p99},
                             {"requests_per_s", (l.requests - l.failed) / l.seconds},
                             {"output_tokens_per_s", l.output_tokens / l.seconds},
                             {"decode_steps", steps}});
    }
    std::cout << j.dump() << "\n";
  } else {
    std::cout << std::fixed;
    std::cout << "model " << models["data"][0]["id"].get<std::string>() << " on " << ranks
              << " rank(s): " << std::setprecision(1)
              << m["total_weight_bytes"].get<double>() / (1 << 20) << " MiB of weights, "
              << m["active_weight_bytes"].get<double>() / (1 << 20)
              << " MiB active per token; last-level cache " << llc / (1 << 20) << " MiB\n";
    std::cout << "GEMM peak      " << std::setprecision(1) << gemm.flops / 1e9
              << " GFLOP/s (cblas_sgemm n " << gemm.n << ", " << gemm.threads << " thread(s))\n";
    std::cout << "read bandwidth " << bw.bytes_per_s / 1e9 << " GB/s (" << (bw.bytes >> 20)
              << " MiB, " << bw.threads << " thread(s))\n";
    if (roof.run) {
      std::cout << "prefill " << roof.prefill_tokens << " tokens: " << std::setprecision(3)
                << roof.prefill_s << " s, " << std::setprecision(1) << prefill_fps / 1e9
                << " GFLOP/s = " << 100 * prefill_fps / gemm.flops
                << " % of the GEMM peak (target 50 %)\n";
      std::cout << "decode batch 1: " << std::setprecision(2) << roof.decode_tpot * 1e3
                << " ms/token, " << std::setprecision(1) << roof.decode_bytes / (1 << 20)
                << " MiB read per token, " << decode_bps / 1e9
                << " GB/s = " << 100 * decode_bps / bw.bytes_per_s
                << " % of the bandwidth (target 50 %)\n";
    }
    std::cout << "clients  requests  failed  TTFT p50 ms  TTFT p99 ms  TPOT p50 ms  TPOT p99 ms  "
                 "requests/s  output tokens/s\n";
    for (const Level& l : results)
      std::cout << std::setw(7) << l.clients << std::setw(10) << l.requests << std::setw(8)
                << l.failed << std::setprecision(2) << std::setw(13) << l.ttft_p50 * 1e3
                << std::setw(13) << l.ttft_p99 * 1e3 << std::setw(13) << l.tpot_p50 * 1e3
                << std::setw(13) << l.tpot_p99 * 1e3 << std::setw(12)
                << (l.requests - l.failed) / l.seconds << std::setprecision(1) << std::setw(17)
                << l.output_tokens / l.seconds << "\n";
    for (const Level& l : results) {
      std::string line;
      for (std::size_t i = 0; i < l.steps.modes.size(); ++i) {
        if (l.steps.count[i] <= 0) continue;
        std::ostringstream w;
        w << std::fixed << std::setprecision(2) << (line.empty() ? "" : ", ") << l.steps.modes[i]
          << " " << 1e3 * l.steps.seconds[i] / l.steps.count[i] << " ms ("
          << static_cast<long>(l.steps.count[i]) << " steps)";
        line += w.str();
      }
      if (!line.empty())
        std::cout << "  " << l.clients << " client(s): mean decode step: " << line << "\n";
    }
    for (const Level& l : results)
      if (l.failed > 0)
        std::cout << "  " << l.clients << " client(s): first failure: " << l.first_error << "\n";
    std::cout << "epx-bench serve: " << (failed == 0 && server_status == 0 ? "OK" : "FAILED")
              << "\n";
  }
  return failed == 0 && server_status == 0 ? 0 : 1;
}

}  // namespace

void register_serve_bench(Registry& registry) {
  registry.add({"serve", kSummary, [] { return make_options().usage(kSummary); }, run_serve_bench});
}

}  // namespace epx::bench
