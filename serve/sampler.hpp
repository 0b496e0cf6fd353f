// Choosing the next token from a row of logits. temperature 0 is greedy:
// the argmax, ties to the lowest id. Otherwise, in double: p_i =
// exp((l_i - max l) / temperature); the candidates sorted by descending p
// (ties: lower id); with top_p < 1 only the shortest prefix whose p sum
// reaches top_p of the total stays; then u = uniform [0, 1) from the
// request's generator times the kept sum, and the first candidate whose
// running sum passes u wins. The generator is splitmix64 seeded with the
// request's seed and draws once per sampled token, so a seed fixes the output.
#pragma once

#include <cstdint>

namespace epx::serve {

class Rng {
 public:
  explicit Rng(std::uint64_t seed) : state_(seed) {}
  std::uint64_t next() noexcept;
  double uniform() noexcept;  // [0, 1), 53 bits

 private:
  std::uint64_t state_;
};

struct SamplingParams {
  double temperature = 1.0;  // >= 0
  double top_p = 1.0;        // (0, 1]
};

std::int32_t argmax(const float* logits, std::int64_t vocab);
std::int32_t sample(const float* logits, std::int64_t vocab, const SamplingParams& p, Rng& rng);

}  // namespace epx::serve
