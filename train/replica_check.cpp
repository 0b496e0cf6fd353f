#include "train/replica_check.hpp"

#include <algorithm>
#include <cstring>

#include "core/check.hpp"

namespace epx::train {

namespace {

// FNV-1a over the bytes of a slot's three arrays.
std::uint64_t fingerprint(const model::ParamStore& X, std::int64_t offset, std::int64_t n) {
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (const std::vector<float>* a : {&X.values, &X.exp_avg, &X.exp_avg_sq}) {
    const auto* p = reinterpret_cast<const unsigned char*>(a->data() + offset);
    for (std::int64_t i = 0; i < n * static_cast<std::int64_t>(sizeof(float)); ++i) {
      h ^= p[i];
      h *= 0x100000001b3ull;
    }
  }
  return h;
}

}  // namespace

ExpertFingerprints check_replicas(const Comm& world,
                                  const std::vector<const model::Model*>& models) {
  const model::ModelConfig& c = models.at(0)->config();
  const std::int64_t n = 3 * static_cast<std::int64_t>(c.hidden_size) * c.moe_intermediate_size;
  // Per slot: (MoE layer, expert, fingerprint), as three i64.
  std::vector<std::int64_t> mine;
  for (const model::Model* m : models)
    for (const model::LayerIndex& li : m->layers) {
      if (!li.moe || !li.held) continue;
      const model::Model& model = *m;
      const std::vector<int>& slots = model.expert_slots()[static_cast<std::size_t>(li.moe_index)];
      for (std::size_t i = 0; i < slots.size(); ++i) {
        const std::uint64_t f =
            fingerprint(model.experts, model.experts.info(li.expert_gate[i]).offset, n);
        std::int64_t fi;
        std::memcpy(&fi, &f, sizeof f);
        mine.insert(mine.end(), {li.moe_index, slots[i], fi});
      }
    }
  // Ranks of different stages hold different counts: gather padded rows.
  const std::vector<std::int64_t> counts =
      allgather(world, std::vector<std::int64_t>{static_cast<std::int64_t>(mine.size())},
                "checking the expert replicas");
  const std::size_t per_rank =
      static_cast<std::size_t>(*std::max_element(counts.begin(), counts.end()));
  mine.resize(per_rank, -1);
  const std::vector<std::int64_t> all = allgather(world, mine, "checking the expert replicas");
  ExpertFingerprints seen;
  std::map<std::pair<int, int>, int> holder;
  for (std::size_t i = 0; i < all.size(); i += 3) {
    if (all[i] < 0) continue;  // padding
    const std::pair<int, int> key{static_cast<int>(all[i]), static_cast<int>(all[i + 1])};
    std::uint64_t f;
    std::memcpy(&f, &all[i + 2], sizeof f);
    const int rank = static_cast<int>(i / per_rank);
    const auto [it, fresh] = seen.emplace(key, f);
    if (fresh) {
      holder[key] = rank;
      continue;
    }
    EPX_CHECK(it->second == f, Internal, "replica check: MoE layer ", key.first, " expert ",
              key.second, ": the copies on world ranks ", holder[key], " and ", rank,
              " differ (weights or AdamW moments)");
  }
  return seen;
}

void check_unchanged(const ExpertFingerprints& before, const ExpertFingerprints& after,
                     const std::string& what) {
  EPX_CHECK(before.size() == after.size(), Internal, "replica check: ", what, " holds ",
            after.size(), " experts, expected ", before.size());
  for (const auto& [key, f] : before) {
    const auto it = after.find(key);
    EPX_CHECK(it != after.end() && it->second == f, Internal, "replica check: ", what,
              " changed MoE layer ", key.first, " expert ", key.second,
              " (weights or AdamW moments)");
  }
}

}  // namespace epx::train
