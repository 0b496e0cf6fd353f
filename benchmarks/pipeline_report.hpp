// Output of `epx-bench pipeline`: a table for people, one JSON object for
// tools. Activations are given in micro-batches x 1/P of the model (P ranks),
// the unit of --memory-budget, so that DualPipeV's half-size chunks compare.
#pragma once

#include <epx/pipeline_tools.hpp>
#include <ostream>
#include <string>
#include <vector>

namespace epx::bench {

struct PipelineReport {
  pipeline::Schedule schedule;
  pipeline::Costs costs;  // per chunk, as simulated
  pipeline::Simulation simulation;
  double memory_budget = 0;  // 0: none
  bool automatic = false;    // --schedule auto: reason and candidates below
  std::string reason;
  std::vector<pipeline::AutoCandidate> candidates;
};

// Peak live activations of each rank in the budget's unit.
std::vector<double> peak_activations(const PipelineReport& r);

void print_table(std::ostream& os, const PipelineReport& r);
void print_json(std::ostream& os, const PipelineReport& r);

}  // namespace epx::bench
