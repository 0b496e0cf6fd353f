#include "benchmarks/workload.hpp"

#include <numeric>
#include <vector>

namespace epx::bench {

namespace {

// Independent streams per rank and per tensor, so a tensor's values do not
// depend on the sizes of the others.
std::uint64_t stream_seed(std::uint64_t seed, int rank, std::uint64_t stream) {
  Rng mix(seed * 0x100000001B3ull + static_cast<std::uint64_t>(rank) * 0x9E37ull + stream);
  return mix.next();
}

void fill_routing(const WorkloadSpec& spec, int rank, std::int64_t* idx) {
  Rng rng(stream_seed(spec.seed, rank, 1));
  // A partial Fisher-Yates shuffle over a running permutation of the experts:
  // each token takes K distinct experts, uniformly, in random order.
  std::vector<std::int64_t> perm(static_cast<std::size_t>(spec.experts));
  std::iota(perm.begin(), perm.end(), 0);
  for (std::int64_t t = 0; t < spec.tokens; ++t) {
    for (int k = 0; k < spec.topk; ++k) {
      const std::size_t j = k + rng.below(static_cast<std::uint64_t>(spec.experts - k));
      std::swap(perm[static_cast<std::size_t>(k)], perm[j]);
      const bool dropped = rng.uniform() < spec.drop;
      idx[t * spec.topk + k] = dropped ? -1 : perm[static_cast<std::size_t>(k)];
    }
  }
}

void fill_activations(const WorkloadSpec& spec, int rank, std::uint16_t* x) {
  Rng rng(stream_seed(spec.seed, rank, 2));
  const std::int64_t n = spec.tokens * spec.hidden;
  // bf16 bits: random sign, 7 random mantissa bits, exponent 2^-4 .. 2^0. No
  // zeros, so combine sums never meet signed-zero corner cases, and amax/min
  // stays within 32x per block, so FP8 never flushes a value to zero.
  for (std::int64_t i = 0; i < n; i += 4) {
    std::uint64_t r = rng.next();
    for (std::int64_t j = i; j < i + 4 && j < n; ++j, r >>= 16) {
      const std::uint32_t bits = static_cast<std::uint32_t>(r & 0xFFFF);
      const std::uint32_t sign = bits & 1u;
      const std::uint32_t mantissa = (bits >> 1) & 0x7Fu;
      const std::uint32_t exponent = 123u + (bits >> 8) % 5u;
      x[j] = static_cast<std::uint16_t>((sign << 15) | (exponent << 7) | mantissa);
    }
  }
}

void fill_weights(const WorkloadSpec& spec, int rank, float* w) {
  Rng rng(stream_seed(spec.seed, rank, 3));
  for (std::int64_t i = 0; i < spec.tokens * spec.topk; ++i) {
    w[i] = 0.01f + 0.99f * static_cast<float>(rng.next() >> 40) * 0x1.0p-24f;
  }
}

}  // namespace

Workload make_workload(const WorkloadSpec& spec, int rank) {
  Workload w;
  w.x = Tensor::empty({spec.tokens, spec.hidden}, DType::bf16);
  w.topk_idx = Tensor::empty({spec.tokens, spec.topk}, DType::i64);
  w.topk_weights = Tensor::empty({spec.tokens, spec.topk}, DType::f32);
  fill_routing(spec, rank, w.topk_idx.data<std::int64_t>());
  fill_activations(spec, rank, w.x.data<std::uint16_t>());
  fill_weights(spec, rank, w.topk_weights.data<float>());
  return w;
}

test::InputsOf workload_inputs(const WorkloadSpec& spec) {
  return [spec](int rank) {
    Workload w = make_workload(spec, rank);
    return test::RankInputs{w.x, w.topk_idx, w.topk_weights};
  };
}

}  // namespace epx::bench
