// Builders for a Schedule's placement (stage_of, paths, path_of), shared by
// the generators. Internal to the pipeline module.
#pragma once

#include <epx/pipeline.hpp>

namespace epx::pipeline::detail {

// One chunk per rank, stage r on rank r, every micro-batch on the one path.
Schedule linear_placement(ScheduleKind kind, int ranks, int microbatches);

// DualPipe: chunk 0 of rank r is stage r of the path entering at rank 0
// (micro-batches 0..M/2-1); chunk 1 is stage P-1-r of the path entering at
// rank P-1 (micro-batches M/2..M-1).
Schedule dual_placement(int ranks, int microbatches);

// DualPipeV: stage r on (r, 0), stage 2N-1-r on (r, 1), one path down and up.
Schedule v_placement(int ranks, int microbatches);

}  // namespace epx::pipeline::detail
