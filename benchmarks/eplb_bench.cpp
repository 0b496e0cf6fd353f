// `epx-bench eplb`: placement quality and speed of the balancer. For
// DeepSeek-V3-like shapes (256 experts in 8 groups, 288 and 320 slots, 4 and
// 8 nodes, 32 and 64 GPUs, one global shape) and small ones, on Zipf-skewed
// token counts for every layer: the max/mean GPU load of Policy::eplb and
// Policy::balanced beside a lower bound no placement can beat
// (eplb_bound.hpp), the same-GPU duplicate replicas, the time per
// rebalance_experts call (all layers, one thread), and the bytes a live
// rebalance would migrate when the loads drift (a placement for loads A, then
// one for A with some experts' popularity swapped), with and without slot
// matching (migration_volume), and what the incremental rebalance (from
// balanced's placement of A, for several max_migration values) moves and
// how balanced it is beside the from-scratch plan (eplb_incremental.hpp).
// Runs on rank 0 only.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <epx/balancer.hpp>
#include <iomanip>
#include <iostream>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "benchmarks/collective.hpp"
#include "benchmarks/eplb_bound.hpp"
#include "benchmarks/eplb_incremental.hpp"
#include "benchmarks/options.hpp"
#include "benchmarks/registry.hpp"
#include "benchmarks/timing.hpp"

namespace epx::bench {

namespace {

const char* const kSummary =
    "expert placement: max/mean GPU load of eplb and balanced vs a lower bound, time per call, "
    "bytes migrated";

OptionSet make_options() {
  OptionSet o("eplb");
  o.add_int("layers", 61, 1, 100000, "MoE layers (rows of the load matrix)");
  o.add_int("zipf-percent", 100, 0, 1000,
            "Zipf exponent x 100 of the expert loads (100: load ~ 1/rank)");
  o.add_int("tokens", 1 << 20, 1, INT64_MAX / 4096,
            "token-expert pairs per layer (before rounding)");
  o.add_int("iters", 5, 1, 100000, "timed calls per policy and shape; the median is reported");
  o.add_int("seed", 1, 0, INT64_MAX, "random seed of the loads");
  o.add_int("drift-percent", 10, 0, 1000,
            "migration: the second load swaps the popularity of this % of expert pairs per layer");
  o.add_int("expert-bytes", 3LL * 7168 * 2048, 1, INT64_MAX / (1LL << 24),
            "migration: bytes of one expert's tensors (default: DeepSeek-V3 FP8 FFN weights)");
  o.add_string("max-migration", "0.05,0.1,0.25,0.5,1", "",
               "incremental rebalance after the drift: the max_migration values to run (fractions "
               "of the from-scratch plan's copies)");
  o.add_flag("json", "print one JSON object instead of the table");
  return o;
}

// Integer token counts: per layer, experts ranked in a random order, expert of
// rank r gets tokens / r^s (normalised to the layer's total), rounded. With
// swaps > 0, that many random pairs of experts then trade ranks (the same
// order as swaps = 0 before that: loads that drifted).
Tensor zipf_counts(int layers, int experts, double s, std::int64_t tokens, std::uint64_t seed,
                   int swaps = 0) {
  std::mt19937_64 rng(seed), drift(seed ^ 0x9e3779b97f4a7c15ull);
  Tensor t = Tensor::empty({layers, experts}, DType::i64);
  std::vector<int> rank(experts);
  double norm = 0;
  for (int r = 1; r <= experts; ++r) norm += std::pow(r, -s);
  for (int l = 0; l < layers; ++l) {
    std::iota(rank.begin(), rank.end(), 1);
    std::shuffle(rank.begin(), rank.end(), rng);
    for (int i = 0; i < swaps; ++i) std::swap(rank[drift() % experts], rank[drift() % experts]);
    for (int e = 0; e < experts; ++e) {
      t.data<std::int64_t>()[l * experts + e] =
          std::llround(static_cast<double>(tokens) * std::pow(rank[e], -s) / norm);
    }
  }
  return t;
}

struct PolicyResult {
  double mean_ratio = 0;   // max/mean GPU load, mean over layers
  double worst_ratio = 0;  // ... worst layer
  std::int64_t duplicates = 0;
  double ms_per_call = 0;      // median wall time
  double cpu_ms_per_call = 0;  // median CPU time of the calling thread
  balancer::Placement placement;
  // Bytes moved adopting the placement of the drifted load, all layers.
  double naive_bytes = 0, matched_bytes = 0;
};

struct ShapeResult {
  BalanceShape shape;
  PolicyResult eplb, balanced;
  double bound_mean = 0, bound_worst = 0;
  double gap_closed = 0;          // (eplb - balanced) / (eplb - bound), over the layer sums
  IncrementalResult incremental;  // from balanced's placement, after the drift
};

PolicyResult measure(const Tensor& load, const BalanceShape& s, balancer::Policy policy,
                     int iters) {
  std::vector<double> ms, cpu_ms;
  balancer::Placement p;
  for (int i = 0; i < iters; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    const double c0 = thread_cpu_ms();
    p = balancer::rebalance_experts(load, s.replicas, s.groups, s.nodes, s.gpus, policy);
    cpu_ms.push_back(thread_cpu_ms() - c0);
    ms.push_back(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  std::sort(cpu_ms.begin(), cpu_ms.end());
  const balancer::PlacementQuality q = balancer::evaluate_placement(load, p, s.gpus);
  PolicyResult r;
  r.ms_per_call = ms[ms.size() / 2];
  r.cpu_ms_per_call = cpu_ms[cpu_ms.size() / 2];
  r.placement = p;
  for (std::size_t l = 0; l < q.gpu_max_over_mean.size(); ++l) {
    r.mean_ratio += q.gpu_max_over_mean[l] / q.gpu_max_over_mean.size();
    r.worst_ratio = std::max(r.worst_ratio, q.gpu_max_over_mean[l]);
    r.duplicates += q.same_gpu_duplicates[l];
  }
  return r;
}

// Migration from r.placement to the placement of `drifted`, as a live
// rebalance would do it: naive (slots as rebalance_experts numbers them) and
// with slot matching; expert_bytes per copy.
void measure_migration(PolicyResult& r, const Tensor& drifted, const BalanceShape& s,
                       balancer::Policy policy, double expert_bytes) {
  const balancer::Placement next =
      balancer::rebalance_experts(drifted, s.replicas, s.groups, s.nodes, s.gpus, policy);
  const balancer::MigrationVolume v = balancer::migration_volume(r.placement, next, s.gpus);
  r.naive_bytes = static_cast<double>(v.naive) * expert_bytes;
  r.matched_bytes = static_cast<double>(v.matched) * expert_bytes;
}

ShapeResult run_shape(const BalanceShape& s, int layers, double zipf, std::int64_t tokens,
                      std::uint64_t seed, int iters, int drift_percent, double expert_bytes,
                      const std::vector<double>& max_migrations) {
  const Tensor load = zipf_counts(layers, s.experts, zipf, tokens, seed);
  const Tensor drifted =
      zipf_counts(layers, s.experts, zipf, tokens, seed, s.experts * drift_percent / 100);
  ShapeResult r;
  r.shape = s;
  r.eplb = measure(load, s, balancer::Policy::eplb, iters);
  r.balanced = measure(load, s, balancer::Policy::balanced, iters);
  measure_migration(r.eplb, drifted, s, balancer::Policy::eplb, expert_bytes);
  measure_migration(r.balanced, drifted, s, balancer::Policy::balanced, expert_bytes);
  r.incremental =
      measure_incremental(r.balanced.placement, drifted, s, expert_bytes, max_migrations);
  std::vector<double> row(s.experts);
  for (int l = 0; l < layers; ++l) {
    for (int e = 0; e < s.experts; ++e)
      row[e] = static_cast<double>(load.data<std::int64_t>()[l * s.experts + e]);
    const double b = placement_lower_bound(row.data(), s);
    r.bound_mean += b / layers;
    r.bound_worst = std::max(r.bound_worst, b);
  }
  const double room = r.eplb.mean_ratio - r.bound_mean;
  r.gap_closed = room > 0 ? (r.eplb.mean_ratio - r.balanced.mean_ratio) / room : 0;
  return r;
}

std::string shape_name(const BalanceShape& s) {
  std::ostringstream os;
  os << "E=" << s.experts << " G=" << s.groups << " P=" << s.replicas << " N=" << s.nodes
     << " K=" << s.gpus << (s.hierarchical() ? "" : " (global)");
  return os.str();
}

void print_table(const std::vector<ShapeResult>& rs, int layers, double zipf, int drift_percent,
                 double expert_bytes) {
  std::cout << "epx-bench eplb: " << layers << " layers, Zipf " << zipf
            << " loads; max/mean GPU load (mean over layers / worst layer), same-GPU "
               "duplicates, ms per call (median wall and thread CPU time, all layers), GB "
               "migrated to adopt the placement of a drifted load ("
            << drift_percent << "% of expert pairs swap popularity, " << expert_bytes / 1e6
            << " MB per expert, all layers) without and with slot matching\n\n";
  std::cout << std::left << std::setw(34) << "shape" << std::setw(10) << "policy" << std::right
            << std::setw(9) << "mean" << std::setw(9) << "worst" << std::setw(7) << "dups"
            << std::setw(10) << "ms/call" << std::setw(10) << "cpu ms" << std::setw(10)
            << "GB naive" << std::setw(10) << "GB match"
            << "\n";
  std::cout << std::fixed;
  for (const ShapeResult& r : rs) {
    auto line = [&](const std::string& shape, const char* policy, double mean, double worst,
                    const std::string& dups, const std::string& ms, const std::string& cpu,
                    const std::string& naive = "", const std::string& matched = "") {
      std::cout << std::left << std::setw(34) << shape << std::setw(10) << policy << std::right
                << std::setprecision(4) << std::setw(9) << mean << std::setw(9) << worst
                << std::setw(7) << dups << std::setw(10) << ms << std::setw(10) << cpu
                << std::setw(10) << naive << std::setw(10) << matched << "\n";
    };
    auto fmt = [](double v) {
      std::ostringstream os;
      os << std::fixed << std::setprecision(2) << v;
      return os.str();
    };
    line(shape_name(r.shape), "eplb", r.eplb.mean_ratio, r.eplb.worst_ratio,
         std::to_string(r.eplb.duplicates), fmt(r.eplb.ms_per_call), fmt(r.eplb.cpu_ms_per_call),
         fmt(r.eplb.naive_bytes / 1e9), fmt(r.eplb.matched_bytes / 1e9));
    line("", "balanced", r.balanced.mean_ratio, r.balanced.worst_ratio,
         std::to_string(r.balanced.duplicates), fmt(r.balanced.ms_per_call),
         fmt(r.balanced.cpu_ms_per_call), fmt(r.balanced.naive_bytes / 1e9),
         fmt(r.balanced.matched_bytes / 1e9));
    line("", "bound", r.bound_mean, r.bound_worst, "", "", "");
    std::cout << std::left << std::setw(34) << ""
              << "balanced closes " << std::setprecision(0) << 100 * r.gap_closed
              << "% of eplb's gap to the bound\n";
    print_incremental("", r.incremental);
  }
  std::cout << "epx-bench eplb: OK\n";
}

void print_json(const std::vector<ShapeResult>& rs, int layers, double zipf, std::uint64_t seed,
                int drift_percent, double expert_bytes) {
  auto policy = [](const PolicyResult& p) {
    std::ostringstream os;
    os << "{\"mean_max_over_mean\":" << p.mean_ratio << ",\"worst_max_over_mean\":" << p.worst_ratio
       << ",\"same_gpu_duplicates\":" << p.duplicates << ",\"ms_per_call\":" << p.ms_per_call
       << ",\"cpu_ms_per_call\":" << p.cpu_ms_per_call
       << ",\"migrated_bytes_naive\":" << static_cast<std::int64_t>(p.naive_bytes)
       << ",\"migrated_bytes_matched\":" << static_cast<std::int64_t>(p.matched_bytes) << "}";
    return os.str();
  };
  std::cout << std::setprecision(6) << "{\"bench\":\"eplb\",\"layers\":" << layers
            << ",\"zipf\":" << zipf << ",\"seed\":" << seed
            << ",\"drift_percent\":" << drift_percent
            << ",\"expert_bytes\":" << static_cast<std::int64_t>(expert_bytes) << ",\"shapes\":[";
  for (std::size_t i = 0; i < rs.size(); ++i) {
    const ShapeResult& r = rs[i];
    const BalanceShape& s = r.shape;
    std::cout << (i ? "," : "") << "{\"experts\":" << s.experts << ",\"groups\":" << s.groups
              << ",\"replicas\":" << s.replicas << ",\"nodes\":" << s.nodes
              << ",\"gpus\":" << s.gpus
              << ",\"hierarchical\":" << (s.hierarchical() ? "true" : "false")
              << ",\"eplb\":" << policy(r.eplb) << ",\"balanced\":" << policy(r.balanced)
              << ",\"lower_bound\":{\"mean_max_over_mean\":" << r.bound_mean
              << ",\"worst_max_over_mean\":" << r.bound_worst << "},\"gap_closed\":" << r.gap_closed
              << ",\"incremental\":" << incremental_json(r.incremental) << "}";
  }
  std::cout << "]}\n";
}

int run_eplb(MPI_Comm comm, const std::vector<std::string>& args) {
  OptionSet o = make_options();
  o.parse(args);
  if (comm_rank(comm) != 0) return 0;  // a single-threaded, single-process benchmark
  const int layers = static_cast<int>(o.get_int("layers"));
  const double zipf = o.get_int("zipf-percent") / 100.0;
  const std::int64_t tokens = o.get_int("tokens");
  const std::uint64_t seed = static_cast<std::uint64_t>(o.get_int("seed"));
  const int iters = static_cast<int>(o.get_int("iters"));
  const int drift = static_cast<int>(o.get_int("drift-percent"));
  const double expert_bytes = static_cast<double>(o.get_int("expert-bytes"));
  const std::vector<double> max_migrations = parse_max_migrations(o.get_string("max-migration"));
  const BalanceShape shapes[] = {
      {12, 4, 16, 2, 8},                           // DeepSeek's published example shape
      {64, 8, 80, 2, 16},                          // small
      {256, 8, 288, 4, 32},                        // DeepSeek-V3 prefill-like
      {256, 8, 288, 8, 32},                        // one group per node
      {256, 8, 320, 4, 32}, {256, 8, 320, 8, 64},  // decode-like
      {256, 8, 288, 3, 24},                        // 8 % 3 != 0: global
  };
  std::vector<ShapeResult> results;
  for (const BalanceShape& s : shapes)
    results.push_back(
        run_shape(s, layers, zipf, tokens, seed, iters, drift, expert_bytes, max_migrations));
  if (o.flag("json"))
    print_json(results, layers, zipf, seed, drift, expert_bytes);
  else
    print_table(results, layers, zipf, drift, expert_bytes);
  return 0;
}

}  // namespace

void register_eplb_bench(Registry& registry) {
  registry.add(Subcommand{"eplb", kSummary,
                          [] {
                            return make_options().usage(
                                std::string(kSummary) +
                                ".\nSingle-threaded, on rank 0; e.g.\n"
                                "  epxrun -n 1 -- epx-bench eplb --layers 61 --zipf-percent 100");
                          },
                          run_eplb});
}

}  // namespace epx::bench
