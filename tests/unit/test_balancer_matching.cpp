// match_slots and migration_volume (pure): a worked example, the matching
// is a relabelling within GPUs that keeps the most replicas in place, and
// matched copies never exceed a naive re-placement; bad input is rejected.
#include <map>

#include "balancer_testing.hpp"

namespace epx::balancer {
namespace {

using testing::at;

// A placement with only phy2log and logcnt filled (all migration reads).
Placement from_phy2log(const std::vector<std::vector<std::int64_t>>& rows, std::int64_t experts) {
  Placement p;
  p.phy2log = testing::make_load(rows);
  p.logcnt = Tensor::zeros({static_cast<std::int64_t>(rows.size()), experts}, DType::i64);
  for (std::size_t l = 0; l < rows.size(); ++l)
    for (const std::int64_t e : rows[l]) ++p.logcnt.data<std::int64_t>()[l * experts + e];
  p.log2phy = Tensor::zeros({static_cast<std::int64_t>(rows.size()), experts, 1}, DType::i64);
  return p;
}

TEST(MatchSlots, WorkedExample) {
  // 2 GPUs x 3 slots. Every expert the target puts on a GPU is there already.
  const Placement current = from_phy2log({{0, 1, 2, 3, 0, 1}}, 4);
  const Placement target = from_phy2log({{2, 2, 0, 1, 3, 3}}, 4);
  const Placement m = match_slots(current, target, 2);
  const std::vector<std::int64_t> want{0, 2, 2, 3, 3, 1};
  for (int p = 0; p < 6; ++p) EXPECT_EQ(at(m.phy2log, 0, p), want[p]) << "slot " << p;
  EXPECT_EQ(at(m.log2phy, 0, 2 * m.log2phy.dim(2)), 1);  // expert 2 at slots 1, 2
  const MigrationVolume v = migration_volume(current, target, 2);
  EXPECT_EQ(v.naive, 6);
  EXPECT_EQ(v.matched, 0);
  EXPECT_EQ(migration_volume(current, m, 2).naive, 2);  // the local copies 1->2, 0->3
}

TEST(MatchSlots, KeepsMostReplicasOnRandomPlacements) {
  for (std::uint64_t seed = 1; seed <= 40; ++seed) {
    const int gpus = 1 + static_cast<int>(seed % 8), experts = 3 * gpus + 2 * (seed % 3 == 0);
    const int before = experts + gpus * static_cast<int>(seed % 3);
    const int after = experts + gpus * static_cast<int>((seed / 3) % 3);
    if (before % gpus || after % gpus) continue;
    const Placement current = rebalance_experts(testing::zipf_load(2, experts, 1.0, seed), before,
                                                1, 1, gpus, Policy::eplb);
    const Placement target =
        rebalance_experts(testing::zipf_load(2, experts, 1.0, seed + 500), after, 1, 1, gpus);
    const Placement m = match_slots(current, target, gpus);
    const int sc = before / gpus, st = after / gpus;
    for (int l = 0; l < 2; ++l) {
      for (int g = 0; g < gpus; ++g) {
        std::map<std::int64_t, int> want, got, cur;
        int kept = 0;
        for (int i = 0; i < st; ++i) {
          ++want[at(target.phy2log, l, g * st + i)];
          ++got[at(m.phy2log, l, g * st + i)];
          if (i < sc) {
            ++cur[at(current.phy2log, l, g * sc + i)];
            kept += at(m.phy2log, l, g * st + i) == at(current.phy2log, l, g * sc + i);
          }
        }
        EXPECT_EQ(got, want) << "seed " << seed << " layer " << l << " GPU " << g;
        int best = 0;  // the most slots any relabelling can keep
        for (const auto& [e, n] : cur) best += std::min(n, want.count(e) ? want[e] : 0);
        EXPECT_EQ(kept, best) << "seed " << seed << " layer " << l << " GPU " << g;
      }
    }
    const MigrationVolume v = migration_volume(current, target, gpus);
    EXPECT_LE(v.matched, v.naive);
    EXPECT_LE(v.matched, migration_volume(current, m, gpus).naive);
    EXPECT_EQ(v.matched, migration_volume(current, m, gpus).matched);
  }
}

TEST(MatchSlots, BadInput) {
  const Placement a = from_phy2log({{0, 1, 2, 3}}, 4);
  const Placement fewer_experts = from_phy2log({{0, 1, 2, 0}}, 3);
  EXPECT_THROW(match_slots(a, fewer_experts, 2), Error);
  EXPECT_THROW(match_slots(a, a, 3), Error);  // 4 slots on 3 GPUs
  EXPECT_THROW(migration_volume(a, a, 0), Error);
  Placement missing = from_phy2log({{0, 1, 2, 3}}, 4);
  missing.phy2log.data<std::int64_t>()[3] = 2;  // expert 3 has no replica
  try {
    match_slots(missing, a, 2);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::InvalidArgument);
    EXPECT_NE(std::string(e.what()).find("expert 3 has no replica"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace epx::balancer
