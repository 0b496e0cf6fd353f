#include "train/faults.hpp"

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

namespace epx::train {

// Fault injection for the failure tests: EPX_TRAIN_STALL=RANK:STEP makes
// that rank sleep for three timeouts at the start of that step, outside MPI;
// EPX_TRAIN_KILL=RANK:STEP kills it there with SIGKILL;
// EPX_TRAIN_KILL_MIGRATION and EPX_TRAIN_STALL_MIGRATION do the same as
// that step's rebalance begins, while the others plan and wait in the
// migration.
bool fault_asked(const char* env, int rank, std::int64_t step) {
  const char* v = std::getenv(env);
  int r = -1;
  long long s = -1;
  return v && std::sscanf(v, "%d:%lld", &r, &s) == 2 && r == rank && s == step;
}

// EPX_TRAIN_CHECK_REPLICAS=1: check every replica after every step
// (train/replica_check.hpp).
bool replica_check_asked() {
  const char* v = std::getenv("EPX_TRAIN_CHECK_REPLICAS");
  return v && std::string(v) == "1";
}

void inject_faults(int rank, std::int64_t step, double timeout_s) {
  if (fault_asked("EPX_TRAIN_KILL", rank, step)) {
    std::fprintf(stderr, "epx-train: rank %d kills itself at step %lld (EPX_TRAIN_KILL)\n", rank,
                 static_cast<long long>(step));
    std::fflush(stderr);
    std::raise(SIGKILL);
  }
  if (!fault_asked("EPX_TRAIN_STALL", rank, step)) return;
  std::fprintf(stderr, "epx-train: rank %d stalls at step %lld (EPX_TRAIN_STALL)\n", rank,
               static_cast<long long>(step));
  std::this_thread::sleep_for(std::chrono::duration<double>(3 * timeout_s));
}

void inject_migration_faults(int rank, std::int64_t step, double timeout_s) {
  if (fault_asked("EPX_TRAIN_KILL_MIGRATION", rank, step)) {
    std::fprintf(stderr,
                 "epx-train: rank %d kills itself before the migration of step %lld "
                 "(EPX_TRAIN_KILL_MIGRATION)\n",
                 rank, static_cast<long long>(step));
    std::fflush(stderr);
    std::raise(SIGKILL);
  }
  if (!fault_asked("EPX_TRAIN_STALL_MIGRATION", rank, step)) return;
  std::fprintf(stderr,
               "epx-train: rank %d stalls before the migration of step %lld "
               "(EPX_TRAIN_STALL_MIGRATION)\n",
               rank, static_cast<long long>(step));
  std::this_thread::sleep_for(std::chrono::duration<double>(3 * timeout_s));
}

}  // namespace epx::train
