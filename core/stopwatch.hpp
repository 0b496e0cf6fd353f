// Wall time of a piece of work, for the time splits that tools report.
#pragma once

#include <algorithm>
#include <chrono>
#include <vector>

namespace epx::core {

using SteadyClock = std::chrono::steady_clock;

inline double seconds_since(SteadyClock::time_point t0) {
  return std::chrono::duration<double>(SteadyClock::now() - t0).count();
}

// The median of repeated timings (the upper one of an even count: always a
// time that was measured); 0 for none.
inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

}  // namespace epx::core
