// The cost options that `epx-bench pipeline` (simulated, any unit) and
// `epx-bench pipeline-run` (slept, microseconds) share, and the Costs they
// give. Costs describe 1/P of the model, so that every schedule is compared on
// the same model; DualPipeV's chunks hold half of that and cost half.
#pragma once

#include <epx/pipeline_tools.hpp>
#include <string>

#include "benchmarks/options.hpp"

namespace epx::bench {

// --cost-f, --cost-b, --cost-w, --cost-fb, --cost-p2p with these defaults;
// `unit` ends each help line ("" or " (microseconds)").
void add_cost_options(OptionSet& o, const pipeline::Costs& defaults, const std::string& unit);
pipeline::Costs costs_from(const OptionSet& o);  // comm stays 0

}  // namespace epx::bench
