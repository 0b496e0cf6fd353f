// The machine's limits that serving is put against, measured in the run that
// uses them: a BLAS GEMM peak (cblas_sgemm on matrices larger than the
// last-level cache together) and a streaming-read memory bandwidth.
#pragma once

#include <cstddef>
#include <cstdint>

namespace epx::bench {

// Bytes of the last-level cache (sysconf, else /sys), 0 when unknown.
std::int64_t last_level_cache_bytes();

// The smallest n (a multiple of 256) whose three n x n f32 matrices hold
// more bytes than `cache_bytes`.
int gemm_size_past(std::int64_t cache_bytes);

struct GemmPeak {
  int n = 0, threads = 0;
  double seconds = 0;  // the slowest thread's timed sgemm
  double flops = 0;    // threads x 2 n^3 / seconds
};

// `threads` threads at once, each with its own matrices and one BLAS thread,
// each timing one n x n x n cblas_sgemm after a smaller warm-up one.
GemmPeak measure_gemm_peak(int n, int threads);

struct Bandwidth {
  std::size_t bytes = 0;  // read per pass, all threads together
  int threads = 0;
  double bytes_per_s = 0;  // the best of the passes
};

// `threads` threads each summing (as 64-bit integers) its own share of
// `bytes`, first touched by it; `passes` timed passes after one untimed.
Bandwidth measure_read_bandwidth(std::size_t bytes, int threads, int passes);

}  // namespace epx::bench
