// Fault injection and self-checks that the epx-train tests ask for through
// the environment (docs/train.md, tests/train/run_train_test.sh).
#pragma once

#include <cstdint>

namespace epx::train {

// Where a fault can be injected: EPX_TRAIN_STALL=RANK:STEP makes that rank
// sleep three timeouts there, outside MPI, and EPX_TRAIN_KILL=RANK:STEP kills
// it with SIGKILL; the _MIGRATION and _FB variants (EPX_TRAIN_KILL_FB, ...)
// name the other places.
enum class FaultSite {
  StepStart,  // EPX_TRAIN_STALL / EPX_TRAIN_KILL: at the start of the step
  Migration,  // ..._MIGRATION: as the step's rebalance begins, while the others plan
  FbUnit,     // ..._FB: in the step's first DualPipe FB unit, between its forward and
              // its backward, while the EP peers are inside theirs
};
void inject_faults(FaultSite site, int rank, std::int64_t step, double timeout_s);
// EPX_TRAIN_CHECK_REPLICAS=1 (train/replica_check.hpp).
bool replica_check_asked();

}  // namespace epx::train
