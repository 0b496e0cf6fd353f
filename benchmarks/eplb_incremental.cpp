#include "benchmarks/eplb_incremental.hpp"

#include <algorithm>
#include <iomanip>
#include <iostream>
#include <sstream>

#include "benchmarks/options.hpp"
#include "benchmarks/timing.hpp"

namespace epx::bench {

namespace {

// Issue 12's target on the drift case.
constexpr double kTargetBytes = 0.25, kTargetRatio = 1.02;

PlacementFigures figures(const balancer::Placement& current, const balancer::Placement& next,
                         const Tensor& load, const BalanceShape& s, double expert_bytes) {
  const balancer::PlacementQuality q = balancer::evaluate_placement(load, next, s.gpus);
  PlacementFigures f;
  for (const double r : q.gpu_max_over_mean) {
    f.mean_ratio += r / static_cast<double>(q.gpu_max_over_mean.size());
    f.worst_ratio = std::max(f.worst_ratio, r);
  }
  f.bytes =
      static_cast<double>(balancer::migration_volume(current, next, s.gpus).matched) * expert_bytes;
  return f;
}

}  // namespace

IncrementalResult measure_incremental(const balancer::Placement& current, const Tensor& drifted,
                                      const BalanceShape& s, double expert_bytes,
                                      const std::vector<double>& max_migrations) {
  IncrementalResult r;
  const balancer::Placement scratch = balancer::rebalance_experts(
      drifted, s.replicas, s.groups, s.nodes, s.gpus, balancer::Policy::balanced);
  r.scratch = figures(current, scratch, drifted, s, expert_bytes);
  for (const double m : max_migrations) {
    balancer::IncrementalOptions o;
    o.max_migration = m;
    const double c0 = thread_cpu_ms();
    const balancer::Placement next =
        balancer::rebalance_experts(drifted, current, s.groups, s.nodes, s.gpus, o);
    IncrementalPoint p;
    p.cpu_ms = thread_cpu_ms() - c0;
    p.max_migration = m;
    p.figures = figures(current, next, drifted, s, expert_bytes);
    p.bytes_vs_scratch = r.scratch.bytes > 0 ? p.figures.bytes / r.scratch.bytes : 0;
    p.ratio_vs_scratch = p.figures.mean_ratio / r.scratch.mean_ratio;
    r.curve.push_back(p);
  }
  return r;
}

std::vector<double> parse_max_migrations(const std::string& list) {
  std::vector<double> out;
  std::istringstream in(list);
  std::string word;
  while (std::getline(in, word, ',')) {
    std::size_t used = 0;
    double v = -1;
    try {
      v = std::stod(word, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != word.size() || !(v >= 0 && v <= 1))
      throw UsageError("epx-bench eplb: --max-migration '" + word +
                       "', expected comma-separated fractions in [0, 1]");
    out.push_back(v);
  }
  if (out.empty()) throw UsageError("epx-bench eplb: --max-migration is empty");
  return out;
}

void print_incremental(const std::string& shape_name, const IncrementalResult& r) {
  std::cout << std::left << std::setw(34) << shape_name << std::right << std::fixed
            << "after drift: from scratch " << std::setprecision(4) << r.scratch.mean_ratio << " / "
            << r.scratch.worst_ratio << ", " << std::setprecision(2) << r.scratch.bytes / 1e9
            << " GB; incremental:\n";
  for (const IncrementalPoint& p : r.curve) {
    const bool target = p.bytes_vs_scratch <= kTargetBytes && p.ratio_vs_scratch <= kTargetRatio;
    std::cout << std::setw(34) << ""
              << "  max_migration " << std::setprecision(2) << std::setw(4) << p.max_migration
              << ": " << std::setw(7) << p.figures.bytes / 1e9 << " GB (" << std::setprecision(1)
              << std::setw(5) << 100 * p.bytes_vs_scratch << " %), max/mean "
              << std::setprecision(4) << p.figures.mean_ratio << " / " << p.figures.worst_ratio
              << " (" << std::showpos << std::setprecision(2) << 100 * (p.ratio_vs_scratch - 1)
              << std::noshowpos << " %), " << std::setprecision(1) << p.cpu_ms << " ms CPU"
              << (target ? "  [target met]" : "") << "\n";
  }
}

std::string incremental_json(const IncrementalResult& r) {
  auto fig = [](const PlacementFigures& f) {
    std::ostringstream os;
    os << "\"mean_max_over_mean\":" << f.mean_ratio << ",\"worst_max_over_mean\":" << f.worst_ratio
       << ",\"migrated_bytes\":" << static_cast<std::int64_t>(f.bytes);
    return os.str();
  };
  std::ostringstream os;
  os << std::setprecision(6) << "{\"from_scratch\":{" << fig(r.scratch) << "},\"curve\":[";
  for (std::size_t i = 0; i < r.curve.size(); ++i) {
    const IncrementalPoint& p = r.curve[i];
    os << (i ? "," : "") << "{\"max_migration\":" << p.max_migration << "," << fig(p.figures)
       << ",\"bytes_vs_scratch\":" << p.bytes_vs_scratch
       << ",\"ratio_vs_scratch\":" << p.ratio_vs_scratch << ",\"cpu_ms\":" << p.cpu_ms
       << ",\"target_met\":"
       << (p.bytes_vs_scratch <= kTargetBytes && p.ratio_vs_scratch <= kTargetRatio ? "true"
                                                                                    : "false")
       << "}";
  }
  os << "]}";
  return os.str();
}

}  // namespace epx::bench
