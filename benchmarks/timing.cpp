#include "benchmarks/timing.hpp"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <memory>

namespace epx::bench {

double median(std::vector<double> values) {
  if (values.empty()) return 0.0;
  std::sort(values.begin(), values.end());
  const std::size_t n = values.size();
  return n % 2 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
}

double time_collective(MPI_Comm comm, const Repeat& repeat, const std::function<void()>& prepare,
                       const std::function<void()>& op) {
  using Clock = std::chrono::steady_clock;
  std::vector<double> times;
  for (int i = 0; i < repeat.warmup + repeat.iters; ++i) {
    prepare();
    MPI_Barrier(comm);
    const Clock::time_point start = Clock::now();
    op();
    const double local = std::chrono::duration<double>(Clock::now() - start).count();
    double slowest = 0.0;
    MPI_Allreduce(&local, &slowest, 1, MPI_DOUBLE, MPI_MAX, comm);
    if (i >= repeat.warmup) times.push_back(slowest);
  }
  return median(times);
}

std::vector<double> time_interleaved(MPI_Comm comm, const Repeat& repeat,
                                     const std::vector<TimedOp>& ops) {
  using Clock = std::chrono::steady_clock;
  const std::size_t n = ops.size();
  std::vector<std::vector<double>> times(n);
  for (int i = 0; i < repeat.warmup + repeat.iters; ++i) {
    for (std::size_t j = 0; j < n; ++j) {
      const TimedOp& t = ops[(j + static_cast<std::size_t>(i)) % n];
      t.prepare();
      MPI_Barrier(comm);
      const Clock::time_point start = Clock::now();
      t.op();
      const double local = std::chrono::duration<double>(Clock::now() - start).count();
      double slowest = 0.0;
      MPI_Allreduce(&local, &slowest, 1, MPI_DOUBLE, MPI_MAX, comm);
      if (i >= repeat.warmup) times[(j + static_cast<std::size_t>(i)) % n].push_back(slowest);
    }
  }
  std::vector<double> medians;
  for (auto& t : times) medians.push_back(median(t));
  return medians;
}

CopyCeiling::CopyCeiling(std::size_t bytes)
    : bytes_(bytes), src_(std::max<std::size_t>(bytes, 1)), dst_(std::max<std::size_t>(bytes, 1)) {
  // Touch both so page faults are not timed (epx's region is mapped up front too).
  for (std::size_t i = 0; i < src_.size(); ++i) src_[i] = static_cast<unsigned char>(i * 131u);
}

void CopyCeiling::run() {
  std::memcpy(dst_.data(), src_.data(), bytes_);
  // Keep the copy observable.
  volatile unsigned char sink = dst_[dst_.size() / 2];
  (void)sink;
}


}  // namespace epx::bench
