#include "train/faults.hpp"

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

namespace epx::train {

namespace {

bool fault_asked(const std::string& env, int rank, std::int64_t step) {
  const char* v = std::getenv(env.c_str());
  int r = -1;
  long long s = -1;
  return v && std::sscanf(v, "%d:%lld", &r, &s) == 2 && r == rank && s == step;
}

struct SiteText {
  const char* suffix;  // of the variables' names
  const char* where;   // for the message
};

SiteText text_of(FaultSite site) {
  switch (site) {
    case FaultSite::StepStart:
      return {"", "at"};
    case FaultSite::Migration:
      return {"_MIGRATION", "before the migration of"};
    case FaultSite::FbUnit:
      return {"_FB", "inside an FB unit of"};
  }
  return {"", "at"};
}

}  // namespace

// EPX_TRAIN_CHECK_REPLICAS=1: check every replica after every step
// (train/replica_check.hpp).
bool replica_check_asked() {
  const char* v = std::getenv("EPX_TRAIN_CHECK_REPLICAS");
  return v && std::string(v) == "1";
}

void inject_faults(FaultSite site, int rank, std::int64_t step, double timeout_s) {
  const SiteText t = text_of(site);
  const std::string kill = std::string("EPX_TRAIN_KILL") + t.suffix;
  const std::string stall = std::string("EPX_TRAIN_STALL") + t.suffix;
  if (fault_asked(kill, rank, step)) {
    std::fprintf(stderr, "epx-train: rank %d kills itself %s step %lld (%s)\n", rank, t.where,
                 static_cast<long long>(step), kill.c_str());
    std::fflush(stderr);
    std::raise(SIGKILL);
  }
  if (!fault_asked(stall, rank, step)) return;
  std::fprintf(stderr, "epx-train: rank %d stalls %s step %lld (%s)\n", rank, t.where,
               static_cast<long long>(step), stall.c_str());
  std::this_thread::sleep_for(std::chrono::duration<double>(3 * timeout_s));
}

}  // namespace epx::train
