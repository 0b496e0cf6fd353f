// Fault injection and self-checks that the epx-train tests ask for through
// the environment (docs/train.md, tests/train/run_train_test.sh).
#pragma once

#include <cstdint>

namespace epx::train {

// EPX_TRAIN_STALL=RANK:STEP: that rank sleeps three timeouts at the start of
// that step, outside MPI; EPX_TRAIN_KILL=RANK:STEP: it kills itself there.
void inject_faults(int rank, std::int64_t step, double timeout_s);
// EPX_TRAIN_STALL_MIGRATION / EPX_TRAIN_KILL_MIGRATION: the same as that
// step's rebalance begins.
void inject_migration_faults(int rank, std::int64_t step, double timeout_s);
// EPX_TRAIN_CHECK_REPLICAS=1 (train/replica_check.hpp).
bool replica_check_asked();

}  // namespace epx::train
