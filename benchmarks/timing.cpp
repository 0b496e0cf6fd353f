#include "benchmarks/timing.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <ctime>
#include <memory>

namespace epx::bench {

double median(std::vector<double> values) {
  if (values.empty()) return 0.0;
  std::sort(values.begin(), values.end());
  const std::size_t n = values.size();
  return n % 2 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
}

double percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0.0;
  std::sort(values.begin(), values.end());
  const double rank = std::ceil(p / 100.0 * static_cast<double>(values.size()));
  const std::size_t i = static_cast<std::size_t>(std::max(rank, 1.0)) - 1;
  return values[std::min(i, values.size() - 1)];
}

std::vector<std::vector<std::vector<double>>> time_interleaved_samples(
    MPI_Comm comm, const Repeat& repeat, const std::vector<TimedSequence>& sequences) {
  using Clock = std::chrono::steady_clock;
  const std::size_t n = sequences.size();
  std::vector<std::vector<std::vector<double>>> times(n);
  for (std::size_t s = 0; s < n; ++s) times[s].resize(sequences[s].size());
  for (int i = 0; i < repeat.warmup + repeat.iters; ++i) {
    for (std::size_t j = 0; j < n; ++j) {
      const std::size_t s = (j + static_cast<std::size_t>(i)) % n;
      for (std::size_t k = 0; k < sequences[s].size(); ++k) {
        const TimedOp& t = sequences[s][k];
        t.prepare();
        MPI_Barrier(comm);
        const Clock::time_point start = Clock::now();
        t.op();
        const double local = std::chrono::duration<double>(Clock::now() - start).count();
        double slowest = 0.0;
        MPI_Allreduce(&local, &slowest, 1, MPI_DOUBLE, MPI_MAX, comm);
        if (i >= repeat.warmup) times[s][k].push_back(slowest);
      }
    }
  }
  return times;
}

std::vector<double> time_interleaved(MPI_Comm comm, const Repeat& repeat,
                                     const std::vector<TimedOp>& ops) {
  std::vector<TimedSequence> sequences;
  for (const TimedOp& op : ops) sequences.push_back({op});
  std::vector<double> medians;
  for (auto& s : time_interleaved_samples(comm, repeat, sequences)) medians.push_back(median(s[0]));
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

BusyCompute::BusyCompute(double microseconds) : target_us_(microseconds) {
  if (microseconds <= 0) return;
  // Grow the loop until one run takes about 2 ms, then keep the fastest of a
  // few runs: a rank that shares its core is only ever slowed down.
  std::uint64_t rounds = 1024;
  while (spin(rounds) < 2e-3 && rounds < (std::uint64_t{1} << 40)) rounds *= 2;
  double best = spin(rounds);
  for (int i = 0; i < 4; ++i) best = std::min(best, spin(rounds));
  const double rounds_per_us = static_cast<double>(rounds) / (best * 1e6);
  rounds_ = static_cast<std::uint64_t>(std::llround(microseconds * rounds_per_us));
}

double BusyCompute::spin(std::uint64_t rounds) {
  using Clock = std::chrono::steady_clock;
  // A chain of dependent multiply-adds: no compiler can shorten it, and its
  // time per round does not depend on memory.
  volatile double seed_a = 0.999999, seed_b = 1e-6;
  double a = seed_a, b = seed_b, v = 1.0;
  const Clock::time_point start = Clock::now();
  for (std::uint64_t i = 0; i < rounds; ++i) v = v * a + b;
  const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  volatile double sink = v;
  (void)sink;
  return elapsed;
}

void BusyCompute::run() {
  if (rounds_ > 0) spin(rounds_);
}

double thread_cpu_ms() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1e3 + static_cast<double>(ts.tv_nsec) * 1e-6;
}

}  // namespace epx::bench
