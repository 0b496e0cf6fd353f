// The benchmark's input on each rank: random routing and activations, seeded
// by (seed, rank) so that any rank can regenerate any other rank's input (the
// reference check relies on it).
#pragma once

#include <cstdint>
#include <epx/tensor.hpp>

#include "tests/support/inputs.hpp"

namespace epx::bench {

struct WorkloadSpec {
  std::int64_t tokens = 2048;  // T, the same on every rank
  std::int64_t hidden = 2048;  // H
  int topk = 8;                // K
  int experts = 64;            // E
  std::uint64_t seed = 1;
  double drop = 0.02;  // fraction of top-k slots set to -1 (no expert)
};

struct Workload {
  Tensor x;             // bf16 [T,H]: random sign, magnitude in [2^-4, 2), never zero
  Tensor topk_idx;      // i64 [T,K]: distinct experts per token, uniform; about `drop` are -1
  Tensor topk_weights;  // f32 [T,K]: uniform in [0.01, 1)
};

Workload make_workload(const WorkloadSpec& spec, int rank);

// make_workload as the references (tests/support) ask for a rank's inputs.
test::InputsOf workload_inputs(const WorkloadSpec& spec);

// SplitMix64: small, fast, and the same sequence on every platform (the
// standard distributions are not), which cross-rank regeneration needs.
class Rng {
 public:
  explicit Rng(std::uint64_t seed) : state_(seed) {}
  std::uint64_t next() {
    std::uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }  // [0, 1)
  std::uint64_t below(std::uint64_t n) { return next() % n; }

 private:
  std::uint64_t state_;
};

}  // namespace epx::bench
