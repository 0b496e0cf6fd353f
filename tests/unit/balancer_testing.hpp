// Helpers shared by the balancer tests: load matrices (random, Zipf-skewed,
// published) and a checker of every invariant a Placement must satisfy.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <epx/balancer.hpp>
#include <epx/error.hpp>
#include <functional>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <vector>

namespace epx::balancer::testing {

inline Tensor make_load(const std::vector<std::vector<std::int64_t>>& rows) {
  Tensor t = Tensor::empty(
      {static_cast<std::int64_t>(rows.size()), static_cast<std::int64_t>(rows[0].size())},
      DType::i64);
  std::int64_t* p = t.data<std::int64_t>();
  for (const auto& r : rows) p = std::copy(r.begin(), r.end(), p);
  return t;
}

// Uniform integer loads in [lo, hi].
inline Tensor random_load(int layers, int experts, std::uint64_t seed, std::int64_t lo = 0,
                          std::int64_t hi = 1000) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<std::int64_t> dist(lo, hi);
  Tensor t = Tensor::empty({layers, experts}, DType::i64);
  for (std::int64_t i = 0; i < t.numel(); ++i) t.data<std::int64_t>()[i] = dist(rng);
  return t;
}

// Zipf-skewed loads: expert ranks shuffled per layer, load ~ tokens / rank^s.
inline Tensor zipf_load(int layers, int experts, double s, std::uint64_t seed,
                        double tokens = 1e6) {
  std::mt19937_64 rng(seed);
  Tensor t = Tensor::empty({layers, experts}, DType::f32);
  std::vector<int> rank(experts);
  for (int l = 0; l < layers; ++l) {
    std::iota(rank.begin(), rank.end(), 1);
    std::shuffle(rank.begin(), rank.end(), rng);
    for (int e = 0; e < experts; ++e)
      t.data<float>()[l * experts + e] = static_cast<float>(tokens / std::pow(rank[e], s));
  }
  return t;
}

inline std::int64_t at(const Tensor& t, std::int64_t i, std::int64_t j) {
  return t.data<std::int64_t>()[i * t.dim(1) + j];
}

// Every invariant of a placement: shapes, every expert replicated, the three
// tensors agree, log2phy ascending and -1 padded, and in hierarchical mode all
// replicas of a group on one node, each node holding groups/nodes groups.
inline void expect_valid(const Placement& p, const Tensor& load, int replicas, int groups,
                         int nodes, int gpus) {
  const std::int64_t L = load.dim(0), E = load.dim(1);
  ASSERT_EQ(p.phy2log.shape(), (std::vector<std::int64_t>{L, replicas}));
  ASSERT_EQ(p.logcnt.shape(), (std::vector<std::int64_t>{L, E}));
  ASSERT_EQ(p.log2phy.ndim(), 3);
  ASSERT_EQ(p.log2phy.dim(0), L);
  ASSERT_EQ(p.log2phy.dim(1), E);
  const std::int64_t maxcnt = p.log2phy.dim(2);
  const std::int64_t* l2p = p.log2phy.data<std::int64_t>();
  std::int64_t seen_max = 0;
  const bool hierarchical = groups % nodes == 0;
  const std::int64_t group_size = E / groups;
  const std::int64_t slots_per_node = replicas / nodes;
  for (std::int64_t l = 0; l < L; ++l) {
    std::vector<std::int64_t> count(E, 0);
    for (std::int64_t s = 0; s < replicas; ++s) {
      const std::int64_t e = at(p.phy2log, l, s);
      ASSERT_GE(e, 0);
      ASSERT_LT(e, E);
      ++count[e];
    }
    std::vector<std::set<std::int64_t>> group_nodes(groups);
    for (std::int64_t e = 0; e < E; ++e) {
      ASSERT_GE(count[e], 1) << "layer " << l << " expert " << e << " has no replica";
      ASSERT_EQ(at(p.logcnt, l, e), count[e]) << "layer " << l << " expert " << e;
      seen_max = std::max(seen_max, count[e]);
      const std::int64_t* row = l2p + (l * E + e) * maxcnt;
      for (std::int64_t k = 0; k < maxcnt; ++k) {
        if (k < count[e]) {
          ASSERT_GE(row[k], 0);
          ASSERT_LT(row[k], replicas);
          ASSERT_EQ(at(p.phy2log, l, row[k]), e) << "log2phy disagrees with phy2log";
          if (k > 0) {
            ASSERT_LT(row[k - 1], row[k]) << "log2phy not ascending";
          }
          group_nodes[e / group_size].insert(row[k] / slots_per_node);
        } else {
          ASSERT_EQ(row[k], -1) << "log2phy padding";
        }
      }
    }
    if (hierarchical) {
      std::vector<int> groups_on_node(nodes, 0);
      for (int g = 0; g < groups; ++g) {
        ASSERT_EQ(group_nodes[g].size(), 1u) << "layer " << l << ": group " << g << " spans nodes";
        ++groups_on_node[*group_nodes[g].begin()];
      }
      for (int n = 0; n < nodes; ++n) ASSERT_EQ(groups_on_node[n], groups / nodes);
    }
  }
  EXPECT_EQ(maxcnt, seen_max);
}

// `call` throws epx::Error(InvalidArgument) whose message contains every word.
inline void expect_invalid(const std::function<void()>& call,
                           const std::vector<std::string>& words) {
  try {
    call();
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::InvalidArgument) << e.what();
    for (const std::string& w : words)
      EXPECT_NE(std::string(e.what()).find(w), std::string::npos)
          << "'" << w << "' not in: " << e.what();
  }
}

}  // namespace epx::balancer::testing
