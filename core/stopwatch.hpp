// Wall time of a piece of work, for the time splits that tools report.
#pragma once

#include <chrono>

namespace epx::core {

using SteadyClock = std::chrono::steady_clock;

inline double seconds_since(SteadyClock::time_point t0) {
  return std::chrono::duration<double>(SteadyClock::now() - t0).count();
}

}  // namespace epx::core
