// serve/sampler.hpp: greedy ties, determinism given the seed, top_p, and
// that sampled frequencies follow the softmax.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "serve/sampler.hpp"

using namespace epx::serve;

TEST(ServeSampler, GreedyTakesTheLowestIdOfATie) {
  const std::vector<float> l{0.5f, 2.0f, -1.0f, 2.0f, 2.0f};
  EXPECT_EQ(argmax(l.data(), 5), 1);
  Rng rng(1);
  EXPECT_EQ(sample(l.data(), 5, {0.0, 1.0}, rng), 1);
}

TEST(ServeSampler, TheSameSeedGivesTheSameTokens) {
  std::vector<float> l(64);
  for (int i = 0; i < 64; ++i) l[i] = std::sin(0.7f * i);
  Rng a(42), b(42), c(43);
  std::vector<int> x, y, z;
  for (int i = 0; i < 50; ++i) {
    x.push_back(sample(l.data(), 64, {1.0, 0.9}, a));
    y.push_back(sample(l.data(), 64, {1.0, 0.9}, b));
    z.push_back(sample(l.data(), 64, {1.0, 0.9}, c));
  }
  EXPECT_EQ(x, y);
  EXPECT_NE(x, z);
}

TEST(ServeSampler, TopPKeepsTheShortestPrefixReachingIt) {
  // p = softmax: token 2 holds most of the mass; with top_p below its share only it stays.
  const std::vector<float> l{0.0f, 1.0f, 6.0f, 1.0f};
  Rng rng(7);
  for (int i = 0; i < 200; ++i) EXPECT_EQ(sample(l.data(), 4, {1.0, 0.5}, rng), 2);
}

TEST(ServeSampler, FrequenciesFollowTheSoftmax) {
  const std::vector<float> l{0.0f, 1.0f, 2.0f};
  const double temperature = 0.8;
  std::vector<double> p(3);
  double sum = 0;
  for (int i = 0; i < 3; ++i) sum += p[i] = std::exp(l[i] / temperature);
  Rng rng(3);
  std::vector<int> count(3, 0);
  const int n = 60000;
  for (int i = 0; i < n; ++i) ++count[sample(l.data(), 3, {temperature, 1.0}, rng)];
  for (int i = 0; i < 3; ++i) {
    const double want = p[i] / sum, got = static_cast<double>(count[i]) / n;
    EXPECT_NEAR(got, want, 5 * std::sqrt(want * (1 - want) / n)) << "token " << i;
  }
}

TEST(ServeSampler, UniformIsInZeroOne) {
  Rng rng(0);
  for (int i = 0; i < 10000; ++i) {
    const double u = rng.uniform();
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
  }
}
