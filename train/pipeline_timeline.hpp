// One training step of a pipeline as a picture: each rank's ops as they ran
// (measured), above the simulator's play of the same schedule with the
// op costs measured in that step (pipeline::simulate), so that the two can
// be compared op by op. epx-train writes it for log.timeline_step.
#pragma once

#include <string>
#include <vector>

#include <epx/pipeline_tools.hpp>

namespace epx::train {

struct TimelineReport {
  std::string svg;          // a standalone SVG document
  double measured_ms = 0;   // the step's makespan as measured
  double simulated_ms = 0;  // the simulator's makespan from the measured op costs
  pipeline::Costs costs;    // the measured mean op costs (ms per chunk)
};

// times[rank][op]: start and end in ms of every op of schedule.ops[rank]
// (one clock for all ranks: ranks of one host share it).
TimelineReport pipeline_timeline(const pipeline::Schedule& schedule,
                                 const std::vector<std::vector<pipeline::OpTime>>& times);

}  // namespace epx::train
