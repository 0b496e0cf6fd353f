#include "tests/support/random_inputs.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "tests/support/rounding.hpp"

namespace epx::test {

RankInputs make_inputs(const Shape& s, int rank, std::uint32_t payload_salt) {
  const std::int64_t T = s.tokens[rank], H = s.hidden;
  const int K = s.topk;
  const std::uint32_t seed = s.seed * 7919u + static_cast<std::uint32_t>(rank) * 104729u;
  std::mt19937 rng(seed + payload_salt * 15485863u);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> uni(0.0f, 1.0f);
  Tensor xf = Tensor::empty({T, H}, DType::f32);
  float* xp = xf.data<float>();
  for (std::int64_t t = 0; t < T; ++t) {
    const float scale = std::exp2(uni(rng) * 12.0f - 6.0f);  // rows of very different magnitude
    for (std::int64_t h = 0; h < H; ++h) xp[t * H + h] = normal(rng) * scale + 1e-3f;
  }
  RankInputs in;
  in.x = round_to(xf, s.dtype);
  rng.seed(seed ^ 0x5bd1e995u);
  in.topk_idx = Tensor::empty({T, K}, DType::i64);
  in.topk_weights = Tensor::empty({T, K}, DType::f32);
  std::vector<std::int64_t> perm(static_cast<std::size_t>(s.experts));
  for (std::int64_t t = 0; t < T; ++t) {
    std::iota(perm.begin(), perm.end(), 0);
    const int distinct = std::min(K, s.experts);  // slots past E stay -1
    for (int k = 0; k < distinct; ++k) {          // partial Fisher-Yates: distinct experts
      std::uniform_int_distribution<int> pick(k, s.experts - 1);
      std::swap(perm[k], perm[pick(rng)]);
    }
    const bool none = s.all_empty_every > 0 && t % s.all_empty_every == s.all_empty_every - 1;
    for (int k = 0; k < K; ++k) {
      const bool empty = none || k >= distinct || uni(rng) < s.empty_slot;
      in.topk_idx.data<std::int64_t>()[t * K + k] = empty ? -1 : perm[k];
      in.topk_weights.data<float>()[t * K + k] = uni(rng) + 0.01f;
    }
  }
  return in;
}

InputsOf inputs_of(const Shape& s, std::uint32_t payload_salt) {
  return [s, payload_salt](int rank) { return make_inputs(s, rank, payload_salt); };
}

}  // namespace epx::test
