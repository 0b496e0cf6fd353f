// Weight migration on every rank count and node shape: placements from
// rebalance_experts on drifting random and Zipf loads (also with more or
// fewer redundant slots), tensors filled from (layer, expert, tensor,
// element) so any rank can check any slot bit for bit; none lost, none
// duplicated beyond the new replica counts; bytes against a naive
// re-placement; bad input on one rank fails every rank.
#include <gtest/gtest.h>

#include <cstring>
#include <epx/epx.hpp>
#include <functional>
#include <random>
#include <set>

#include "../unit/balancer_testing.hpp"

namespace epx::balancer {
namespace {

Group& world() {
  static Group g(MPI_COMM_WORLD);
  return g;
}

// The shape of one test: E experts in 2 groups per node, placements over the
// group's ranks and (virtual) nodes.
struct Shape {
  int layers = 3;
  int experts = 0, groups = 0, nodes = 0, gpus = 0;
};

Shape shape() {
  Shape s;
  s.gpus = world().size();
  s.nodes = s.gpus % world().num_nodes() == 0 ? world().num_nodes() : 1;
  s.groups = 2 * s.nodes;
  s.experts = 6 * s.gpus;  // a multiple of groups: gpus is a multiple of nodes
  return s;
}

std::uint32_t mix(std::uint64_t x) {
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return static_cast<std::uint32_t>(x ^ (x >> 31));
}

// Tensor j of expert e in layer l: f32 [4,6], bf16 [5] and i64 [3 + l] (one
// shape per layer), every element a function of (l, e, j, k). Element 0 of
// the i64 tensor is e itself, so a slot's content names its expert.
SlotTensors expert_tensors(int l, std::int64_t e) {
  SlotTensors out{Tensor::empty({4, 6}, DType::f32), Tensor::empty({5}, DType::bf16),
                  Tensor::empty({3 + l}, DType::i64)};
  for (std::size_t j = 0; j < out.size(); ++j) {
    auto* bytes = static_cast<unsigned char*>(out[j].raw());
    for (std::size_t k = 0; k < out[j].nbytes(); ++k)
      bytes[k] = static_cast<unsigned char>(mix((l * 1000003ull + e) * 131 + j * 7919 + k));
  }
  out[2].data<std::int64_t>()[0] = e;
  return out;
}

std::vector<std::vector<SlotTensors>> local_weights(const Placement& p) {
  const int me = world().rank();
  const std::int64_t L = p.phy2log.dim(0), P = p.phy2log.dim(1), S = P / world().size();
  std::vector<std::vector<SlotTensors>> w(static_cast<std::size_t>(L));
  for (std::int64_t l = 0; l < L; ++l)
    for (std::int64_t i = 0; i < S; ++i)
      w[l].push_back(expert_tensors(static_cast<int>(l), testing::at(p.phy2log, l, me * S + i)));
  return w;
}

std::uint64_t sum_over_ranks(std::uint64_t v) {
  std::uint64_t out = 0;
  MPI_Allreduce(&v, &out, 1, MPI_UINT64_T, MPI_SUM, MPI_COMM_WORLD);
  return out;
}

enum class Count { naive, matched, internode };

// Plain-loop reference of the bytes moved, per layer and GPU: naive refills
// every local slot whose expert changes; matched sends each expert the GPU
// needs and does not hold yet, once; internode: those of them that no rank
// of the GPU's node holds (a copy from the same node is preferred).
std::uint64_t reference_bytes(const Placement& current, const Placement& target, Count what) {
  const bool naive = what == Count::naive;
  const int R = world().size();
  const std::int64_t L = target.phy2log.dim(0);
  const std::int64_t sc = current.phy2log.dim(1) / R, st = target.phy2log.dim(1) / R;
  std::uint64_t total = 0;
  for (std::int64_t l = 0; l < L; ++l) {
    std::uint64_t bytes = 0;
    for (const Tensor& t : expert_tensors(static_cast<int>(l), 0)) bytes += t.nbytes();
    for (int g = 0; g < R; ++g) {
      std::set<std::int64_t> held, needed;
      for (std::int64_t i = 0; i < sc; ++i)
        held.insert(testing::at(current.phy2log, l, g * sc + i));
      for (std::int64_t i = 0; i < st; ++i) {
        const std::int64_t e = testing::at(target.phy2log, l, g * st + i);
        if (naive && (i >= sc || testing::at(current.phy2log, l, g * sc + i) != e)) total += bytes;
        bool on_node = false;
        for (int r = 0; r < R; ++r) {
          if (world().node_of(r) != world().node_of(g)) continue;
          for (std::int64_t j = 0; j < sc; ++j)
            on_node |= testing::at(current.phy2log, l, r * sc + j) == e;
        }
        if (!held.count(e) && (what != Count::internode || !on_node)) needed.insert(e);
      }
      if (!naive) total += needed.size() * bytes;
    }
  }
  return total;
}

// Everything a migration must satisfy; returns the group's moved bytes.
std::uint64_t check_migration(const Placement& current, const Placement& target,
                              const Migration& m) {
  const int me = world().rank(), R = world().size();
  const std::int64_t L = target.phy2log.dim(0), P = target.phy2log.dim(1), S = P / R;
  const std::int64_t E = target.logcnt.dim(1);
  // The matched placement holds, per GPU, the target's experts (a relabelling).
  EXPECT_EQ(m.placement.phy2log.shape(), target.phy2log.shape());
  for (std::int64_t l = 0; l < L; ++l) {
    for (int g = 0; g < R; ++g) {
      std::multiset<std::int64_t> want, got;
      for (std::int64_t i = 0; i < S; ++i) {
        want.insert(testing::at(target.phy2log, l, g * S + i));
        got.insert(testing::at(m.placement.phy2log, l, g * S + i));
      }
      EXPECT_EQ(got, want) << "layer " << l << " GPU " << g;
    }
  }
  // This rank's slots: bit-exact content of the placement's expert, own storage.
  std::vector<std::uint64_t> count(static_cast<std::size_t>(L * E), 0);
  std::set<const void*> storage;
  EXPECT_EQ(static_cast<std::int64_t>(m.weights.size()), L);
  for (std::int64_t l = 0; l < L && l < static_cast<std::int64_t>(m.weights.size()); ++l) {
    EXPECT_EQ(static_cast<std::int64_t>(m.weights[l].size()), S);
    for (std::int64_t i = 0; i < S && i < static_cast<std::int64_t>(m.weights[l].size()); ++i) {
      const SlotTensors& got = m.weights[l][i];
      const std::int64_t e = testing::at(m.placement.phy2log, l, me * S + i);
      const SlotTensors want = expert_tensors(static_cast<int>(l), e);
      EXPECT_EQ(got.size(), want.size());
      if (got.size() != want.size()) continue;
      for (std::size_t j = 0; j < got.size(); ++j) {
        EXPECT_EQ(got[j].shape(), want[j].shape());
        EXPECT_EQ(got[j].dtype(), want[j].dtype());
        EXPECT_TRUE(got[j].nbytes() == want[j].nbytes() &&
                    std::memcmp(got[j].raw(), want[j].raw(), want[j].nbytes()) == 0)
            << "layer " << l << " slot " << i << " (expert " << e << ") tensor " << j << " on rank "
            << me;
        EXPECT_TRUE(storage.insert(got[j].raw()).second) << "two slots share storage";
      }
      const std::int64_t named = got[2].data<std::int64_t>()[0];
      if (named >= 0 && named < E) ++count[l * E + named];
    }
  }
  // Over the group: every expert exactly as many times as it has replicas.
  std::vector<std::uint64_t> total(count.size());
  MPI_Allreduce(count.data(), total.data(), static_cast<int>(count.size()), MPI_UINT64_T, MPI_SUM,
                MPI_COMM_WORLD);
  for (std::int64_t i = 0; i < L * E; ++i)
    EXPECT_EQ(static_cast<std::int64_t>(total[i]), target.logcnt.data<std::int64_t>()[i])
        << "layer " << i / E << " expert " << i % E;
  // Bytes: what was received was sent, matches the plan, and is no more than naive.
  const std::uint64_t received = sum_over_ranks(m.stats.bytes_received);
  EXPECT_EQ(received, sum_over_ranks(m.stats.bytes_sent));
  EXPECT_EQ(received, m.stats.moved_bytes);
  EXPECT_LE(m.stats.moved_bytes, m.stats.naive_bytes);
  EXPECT_EQ(m.stats.moved_bytes, reference_bytes(current, target, Count::matched));
  EXPECT_EQ(m.stats.naive_bytes, reference_bytes(current, target, Count::naive));
  EXPECT_EQ(sum_over_ranks(m.stats.internode_bytes_sent),
            reference_bytes(current, target, Count::internode));
  const MigrationVolume v = migration_volume(current, target, R);
  EXPECT_LE(v.matched, v.naive);
  return m.stats.moved_bytes;
}

struct Case {
  const char* name;
  bool zipf;
  int extra_before, extra_after;  // redundant slots per GPU of each placement
  Policy policy;
  bool global = false;  // one expert group: replicas of an expert on several nodes
};

void PrintTo(const Case& c, std::ostream* os) {
  *os << c.name;
}

class MigrateTest : public ::testing::TestWithParam<Case> {};

TEST_P(MigrateTest, ArrivesBitExact) {
  const Case& c = GetParam();
  const Shape s = shape();
  for (std::uint64_t seed = 1; seed <= 3; ++seed) {
    const Tensor a = c.zipf ? testing::zipf_load(s.layers, s.experts, 1.0, seed)
                            : testing::random_load(s.layers, s.experts, seed);
    const Tensor b = c.zipf ? testing::zipf_load(s.layers, s.experts, 1.0, seed + 100)
                            : testing::random_load(s.layers, s.experts, seed + 100);
    const int groups = c.global ? 1 : s.groups;
    const Placement current = rebalance_experts(a, s.experts + c.extra_before * s.gpus, groups,
                                                s.nodes, s.gpus, c.policy);
    const Placement target =
        rebalance_experts(b, s.experts + c.extra_after * s.gpus, groups, s.nodes, s.gpus, c.policy);
    const Migration m = migrate_experts(world(), current, target, local_weights(current), 60);
    check_migration(current, target, m);
    // Again from where we are: the matched placement is the current one now.
    const Migration back = migrate_experts(world(), m.placement, current, m.weights, 60);
    check_migration(m.placement, current, back);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Placements, MigrateTest,
    ::testing::Values(Case{"random_balanced", false, 1, 1, Policy::balanced},
                      Case{"zipf_balanced", true, 2, 2, Policy::balanced},
                      Case{"zipf_eplb", true, 2, 2, Policy::eplb},
                      Case{"zipf_more_slots", true, 1, 3, Policy::balanced},
                      Case{"zipf_fewer_slots", true, 3, 0, Policy::balanced},
                      Case{"zipf_global", true, 2, 2, Policy::balanced, true},
                      Case{"random_global_eplb", false, 1, 2, Policy::eplb, true}),
    [](const ::testing::TestParamInfo<Case>& i) { return std::string(i.param.name); });

// A target that only permutes slots within GPUs moves nothing after
// matching, while a naive re-placement refills every slot that changed.
TEST(Migrate, PermutationWithinGpusMovesNothing) {
  const Shape s = shape();
  const int P = s.experts + 2 * s.gpus, S = P / s.gpus;
  const Placement current = rebalance_experts(testing::zipf_load(s.layers, s.experts, 1.2, 7), P,
                                              s.groups, s.nodes, s.gpus);
  Tensor p2l = current.phy2log.clone();
  for (int l = 0; l < s.layers; ++l)
    for (int g = 0; g < s.gpus; ++g) {
      std::int64_t* slots = p2l.data<std::int64_t>() + static_cast<std::int64_t>(l) * P + g * S;
      std::rotate(slots, slots + 1, slots + S);  // S >= 3: experts differ, so slots change
    }
  // Rebuild log2phy and logcnt from the rotated phy2log.
  const Placement target = match_slots(current, current, s.gpus);  // identity, for the shapes
  Placement rotated;
  rotated.phy2log = p2l;
  rotated.logcnt = target.logcnt.clone();
  rotated.log2phy = target.log2phy.clone();  // not read by migration
  const Migration m = migrate_experts(world(), current, rotated, local_weights(current), 60);
  EXPECT_EQ(m.stats.moved_bytes, 0u);
  EXPECT_EQ(m.stats.bytes_sent + m.stats.bytes_received, 0u);
  EXPECT_GT(m.stats.naive_bytes, 0u);
  EXPECT_TRUE(
      std::memcmp(m.placement.phy2log.raw(), current.phy2log.raw(), current.phy2log.nbytes()) == 0)
      << "matching should undo a rotation";
  const MigrationVolume v = migration_volume(current, rotated, s.gpus);
  EXPECT_EQ(v.matched, 0);
  EXPECT_GT(v.naive, 0);
}

void expect_invalid_everywhere(const std::function<Migration()>& call, int bad,
                               const std::string& own) {
  try {
    call();
    ADD_FAILURE() << "migrate_experts succeeded with bad input on rank " << bad;
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::InvalidArgument) << e.what();
    const std::string what = e.what();
    if (world().rank() == bad || bad < 0)
      EXPECT_NE(what.find(own), std::string::npos) << what;
    else
      EXPECT_NE(what.find("rank " + std::to_string(bad) + " failed"), std::string::npos) << what;
  }
}

TEST(Migrate, BadInputOnOneRankFailsEveryRank) {
  const Shape s = shape();
  const int P = s.experts + s.gpus;
  const Placement a =
      rebalance_experts(testing::random_load(s.layers, s.experts, 1), P, s.groups, s.nodes, s.gpus);
  const Placement b =
      rebalance_experts(testing::random_load(s.layers, s.experts, 2), P, s.groups, s.nodes, s.gpus);
  const int bad = world().size() - 1;
  // One slot too few on the last rank.
  expect_invalid_everywhere(
      [&] {
        auto w = local_weights(a);
        if (world().rank() == bad) w[1].pop_back();
        return migrate_experts(world(), a, b, std::move(w), 60);
      },
      bad, "weights[1].size()");
  // A tensor of another dtype on the last rank.
  expect_invalid_everywhere(
      [&] {
        auto w = local_weights(a);
        if (world().rank() == bad) w[0].back()[1] = Tensor::zeros({5}, DType::f32);
        return migrate_experts(world(), a, b, std::move(w), 60);
      },
      bad, "like slot 0");
  // An expert without a current replica (its data exists nowhere).
  expect_invalid_everywhere(
      [&] {
        Placement broken = a;
        broken.phy2log = a.phy2log.clone();
        if (world().rank() == bad) {
          std::int64_t* p = broken.phy2log.data<std::int64_t>();
          for (int i = 0; i < P; ++i)
            if (p[i] == 0) p[i] = 1;
        }
        return migrate_experts(world(), broken, b, local_weights(a), 60);
      },
      bad, "expert 0 has no replica");
  // A target that differs on one rank (each is valid alone): caught by the
  // signature every rank compares, so every rank names the mismatch.
  if (world().size() > 1) {
    expect_invalid_everywhere(
        [&] {
          return migrate_experts(world(), a, world().rank() == bad ? a : b, local_weights(a), 60);
        },
        -1, "differ between ranks");
  }
  // The group still works: a good migration after the failures.
  const Migration m = migrate_experts(world(), a, b, local_weights(a), 60);
  check_migration(a, b, m);
}

}  // namespace
}  // namespace epx::balancer
