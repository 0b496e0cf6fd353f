#include "benchmarks/machine_limits.hpp"

#include <cblas.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace epx::bench {

namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Runs body(i) on `threads` threads that start together; returns when all are done.
template <class Body>
void run_together(int threads, Body body) {
  std::atomic<int> ready{0};
  std::vector<std::thread> pool;
  for (int i = 0; i < threads; ++i)
    pool.emplace_back([&, i] {
      ready.fetch_add(1);
      while (ready.load() < threads) std::this_thread::yield();
      body(i);
    });
  for (std::thread& t : pool) t.join();
}

}  // namespace

std::int64_t last_level_cache_bytes() {
  long v = sysconf(_SC_LEVEL3_CACHE_SIZE);
  if (v <= 0) v = sysconf(_SC_LEVEL2_CACHE_SIZE);
  if (v > 0) return v;
  // /sys: the highest index is the last level ("480M", "32768K").
  std::int64_t best = 0;
  for (int i = 0; i < 8; ++i) {
    std::ifstream in("/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(i) + "/size");
    std::string s;
    if (!(in >> s) || s.empty()) continue;
    std::int64_t n = std::stoll(s);
    if (s.back() == 'K') n <<= 10;
    if (s.back() == 'M') n <<= 20;
    best = std::max(best, n);
  }
  return best;
}

int gemm_size_past(std::int64_t cache_bytes) {
  int n = 256;
  while (3 * static_cast<std::int64_t>(n) * n * 4 <= cache_bytes) n += 256;
  return n;
}

GemmPeak measure_gemm_peak(int n, int threads) {
  openblas_set_num_threads(1);
  std::vector<double> seconds(static_cast<std::size_t>(threads), 0);
  run_together(threads, [&](int t) {
    const std::size_t nn = static_cast<std::size_t>(n) * n;
    std::vector<float> a(nn), b(nn), c(nn);
    std::mt19937 rng(static_cast<unsigned>(t + 1));
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    for (std::size_t i = 0; i < nn; ++i) {
      a[i] = u(rng);
      b[i] = u(rng);
    }
    const int w = std::min(n, 1024);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, w, w, w, 1.0f, a.data(), w, b.data(), w,
                0.0f, c.data(), w);
    const double t0 = now_s();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a.data(), n, b.data(), n,
                0.0f, c.data(), n);
    seconds[static_cast<std::size_t>(t)] = now_s() - t0;
  });
  GemmPeak g;
  g.n = n;
  g.threads = threads;
  g.seconds = *std::max_element(seconds.begin(), seconds.end());
  g.flops = threads * 2.0 * n * static_cast<double>(n) * n / g.seconds;
  return g;
}

Bandwidth measure_read_bandwidth(std::size_t bytes, int threads, int passes) {
  const std::size_t words = bytes / 8 / static_cast<std::size_t>(threads);
  std::vector<std::vector<std::uint64_t>> data(static_cast<std::size_t>(threads));
  std::vector<std::uint64_t> sink(static_cast<std::size_t>(threads), 0);
  run_together(threads, [&](int t) {
    std::vector<std::uint64_t>& d = data[static_cast<std::size_t>(t)];
    d.resize(words);
    for (std::size_t i = 0; i < words; ++i) d[i] = i * 2654435761u + static_cast<std::uint64_t>(t);
  });
  double best = 0;
  for (int p = 0; p <= passes; ++p) {
    std::vector<double> sec(static_cast<std::size_t>(threads), 0);
    run_together(threads, [&](int t) {
      const std::uint64_t* d = data[static_cast<std::size_t>(t)].data();
      const double t0 = now_s();
      std::uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      for (std::size_t i = 0; i + 4 <= words; i += 4) {
        s0 += d[i];
        s1 += d[i + 1];
        s2 += d[i + 2];
        s3 += d[i + 3];
      }
      sec[static_cast<std::size_t>(t)] = now_s() - t0;
      sink[static_cast<std::size_t>(t)] += s0 ^ s1 ^ s2 ^ s3;
    });
    const double s = *std::max_element(sec.begin(), sec.end());
    if (p > 0) best = std::max(best, static_cast<double>(words) * 8 * threads / s);
  }
  // The sums are used, so the reads cannot be dropped.
  volatile std::uint64_t keep = 0;
  for (std::uint64_t s : sink) keep = keep + s;
  (void)keep;
  Bandwidth b;
  b.bytes = words * 8 * static_cast<std::size_t>(threads);
  b.threads = threads;
  b.bytes_per_s = best;
  return b;
}

}  // namespace epx::bench
