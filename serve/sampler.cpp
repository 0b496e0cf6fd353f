#include "serve/sampler.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

namespace epx::serve {

std::uint64_t Rng::next() noexcept {
  std::uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

double Rng::uniform() noexcept {
  return static_cast<double>(next() >> 11) * 0x1.0p-53;
}

std::int32_t argmax(const float* logits, std::int64_t vocab) {
  std::int64_t best = 0;
  for (std::int64_t i = 1; i < vocab; ++i)
    if (logits[i] > logits[best]) best = i;  // strict: a tie keeps the lower id
  return static_cast<std::int32_t>(best);
}

std::int32_t sample(const float* logits, std::int64_t vocab, const SamplingParams& p, Rng& rng) {
  if (p.temperature == 0.0) return argmax(logits, vocab);
  const double m = logits[argmax(logits, vocab)];
  std::vector<double> prob(static_cast<std::size_t>(vocab));
  for (std::int64_t i = 0; i < vocab; ++i) prob[i] = std::exp((logits[i] - m) / p.temperature);
  std::vector<std::int32_t> order(static_cast<std::size_t>(vocab));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](std::int32_t a, std::int32_t b) { return prob[a] > prob[b]; });
  double total = 0;
  for (const std::int32_t i : order) total += prob[i];
  std::size_t kept = order.size();
  if (p.top_p < 1.0) {
    double run = 0;
    for (std::size_t j = 0; j < order.size(); ++j) {
      run += prob[order[j]];
      if (run >= p.top_p * total) {
        kept = j + 1;
        break;
      }
    }
  }
  double kept_sum = 0;
  for (std::size_t j = 0; j < kept; ++j) kept_sum += prob[order[j]];
  const double u = rng.uniform() * kept_sum;
  double run = 0;
  for (std::size_t j = 0; j < kept; ++j) {
    run += prob[order[j]];
    if (run > u) return order[j];
  }
  return order[kept - 1];  // u rounded up to the kept sum
}

}  // namespace epx::serve
