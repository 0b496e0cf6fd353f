// `epx-bench eplb`, incremental rebalance: after a drift of the loads, what
// rebalance_experts with the current placement moves and how balanced its
// result is, for several max_migration values, beside the from-scratch plan
// (Policy::balanced, slot-matched) it is measured against. Every figure is
// recomputed with the public checks (evaluate_placement, migration_volume),
// not taken from the balancer's own accounting.
#pragma once

#include <epx/balancer.hpp>
#include <string>
#include <vector>

#include "benchmarks/eplb_bound.hpp"

namespace epx::bench {

struct PlacementFigures {
  double mean_ratio = 0;   // max/mean GPU load, mean over layers
  double worst_ratio = 0;  // ... worst layer
  double bytes = 0;        // migrated to adopt it after the current placement
};

struct IncrementalPoint {
  double max_migration = 0;
  PlacementFigures figures;
  double cpu_ms = 0;            // thread CPU time of the call (one call)
  double bytes_vs_scratch = 0;  // bytes / from-scratch bytes
  double ratio_vs_scratch = 0;  // mean_ratio / from-scratch mean_ratio
};

struct IncrementalResult {
  PlacementFigures scratch;  // rebalance_experts(drifted, balanced), matched
  std::vector<IncrementalPoint> curve;
};

// current: the placement of the loads before the drift; drifted: the loads now.
IncrementalResult measure_incremental(const balancer::Placement& current, const Tensor& drifted,
                                      const BalanceShape& shape, double expert_bytes,
                                      const std::vector<double>& max_migrations);

// "0.05,0.1,0.25" -> the values, each in [0, 1]; UsageError naming the
// option (--max-migration) and the bad word otherwise.
std::vector<double> parse_max_migrations(const std::string& list);

// The text block of one shape (after its line in the main table) and the
// JSON object of its result. The target of issue 12 is marked per point: at
// most 25 % of the from-scratch bytes, a mean max/mean within 2 % of it.
void print_incremental(const std::string& shape_name, const IncrementalResult& result);
std::string incremental_json(const IncrementalResult& result);

}  // namespace epx::bench
