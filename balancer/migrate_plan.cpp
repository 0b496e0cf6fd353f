// Slot matching and the transfer plan of weight migration; see
// migrate_plan.hpp. Everything here is per (layer, GPU) and linear in slots
// except the matching, which is quadratic in the slots of one GPU (about 10).
#include "balancer/migrate_plan.hpp"

#include <algorithm>

#include "balancer/problem.hpp"
#include "core/check.hpp"

namespace epx::balancer::detail {

const std::int64_t* checked_phy2log(const char* op, const char* name, const Placement& p,
                                    std::int64_t layers, std::int64_t experts) {
  const Tensor& t = p.phy2log;
  EPX_CHECK(t.defined() && t.device() == Device::cpu && t.dtype() == DType::i64 && t.ndim() == 2,
            InvalidArgument, op, ": ", name, ".phy2log is ",
            t.defined() ? t.describe() : std::string("undefined"), ", expected a host i64 [L,P]");
  EPX_CHECK_EQ(t.dim(0), layers, InvalidArgument, op, ": ", name, ".phy2log layers");
  const std::int64_t slots = t.dim(1);
  const std::int64_t* v = t.data<std::int64_t>();
  for (std::int64_t l = 0; l < layers; ++l) {
    std::vector<char> seen(static_cast<std::size_t>(experts), 0);
    for (std::int64_t p = 0; p < slots; ++p) {
      const std::int64_t e = v[l * slots + p];
      EPX_CHECK(e >= 0 && e < experts, InvalidArgument, op, ": ", name, ".phy2log[", l, ",", p,
                "] = ", e, ", expected 0 <= expert < ", experts);
      seen[static_cast<std::size_t>(e)] = 1;
    }
    const auto missing = std::find(seen.begin(), seen.end(), 0);
    // An expert with no current replica has no data to send anywhere.
    EPX_CHECK(missing == seen.end(), InvalidArgument, op, ": ", name, " layer ", l, ": expert ",
              missing - seen.begin(), " has no replica");
  }
  return v;
}

PlacementPair check_pair(const char* op, const Placement& current, const Placement& target,
                         int num_gpus) {
  const Tensor& cnt = target.logcnt;
  EPX_CHECK(cnt.defined() && cnt.ndim() == 2 && cnt.dim(0) >= 1 && cnt.dim(1) >= 1, InvalidArgument,
            op, ": target.logcnt is ", cnt.defined() ? cnt.describe() : std::string("undefined"),
            ", expected [L,E]");
  PlacementPair pair;
  pair.layers = static_cast<int>(cnt.dim(0));
  pair.experts = static_cast<int>(cnt.dim(1));
  EPX_CHECK(current.logcnt.defined() && current.logcnt.ndim() == 2 &&
                current.logcnt.dim(0) == pair.layers && current.logcnt.dim(1) == pair.experts,
            InvalidArgument, op, ": current.logcnt is ",
            current.logcnt.defined() ? current.logcnt.describe() : std::string("undefined"),
            ", expected [", pair.layers, ",", pair.experts,
            "] like target (same layers and experts)");
  EPX_CHECK_GE(num_gpus, 1, InvalidArgument, op);
  pair.gpus = num_gpus;
  pair.current = checked_phy2log(op, "current", current, pair.layers, pair.experts);
  pair.target = checked_phy2log(op, "target", target, pair.layers, pair.experts);
  pair.current_slots = current.phy2log.dim(1);
  pair.target_slots = target.phy2log.dim(1);
  EPX_CHECK(pair.current_slots % num_gpus == 0 && pair.target_slots % num_gpus == 0,
            InvalidArgument, op, ": slots (current ", pair.current_slots, ", target ",
            pair.target_slots, ") must be multiples of num_gpus = ", num_gpus);
  return pair;
}

Tensor match_phy2log(const PlacementPair& pair) {
  const std::int64_t sc = pair.current_per_gpu(), st = pair.target_per_gpu();
  Tensor out = Tensor::empty({pair.layers, pair.target_slots}, DType::i64);
  std::int64_t* dst = out.data<std::int64_t>();
  std::vector<std::int64_t> want(static_cast<std::size_t>(pair.experts), 0);
  std::vector<char> placed(static_cast<std::size_t>(st));
  for (int l = 0; l < pair.layers; ++l) {
    for (int g = 0; g < pair.gpus; ++g) {
      const std::int64_t* cur = pair.current + l * pair.current_slots + g * sc;
      const std::int64_t* tgt = pair.target + l * pair.target_slots + g * st;
      std::int64_t* res = dst + l * pair.target_slots + g * st;
      for (std::int64_t i = 0; i < st; ++i) ++want[tgt[i]];
      // Keep current experts in place while the target still wants them:
      // greedy in slot order is a maximum matching, since a kept slot only
      // uses up a replica of its own expert.
      std::fill(placed.begin(), placed.end(), 0);
      for (std::int64_t i = 0; i < std::min(sc, st); ++i) {
        res[i] = -1;
        if (want[cur[i]] > 0) {
          --want[cur[i]];
          res[i] = cur[i];
        }
      }
      for (std::int64_t i = std::min(sc, st); i < st; ++i) res[i] = -1;
      // The rest, in target order, into the free slots in ascending order.
      std::int64_t free_slot = 0;
      for (std::int64_t i = 0; i < st; ++i) {
        if (want[tgt[i]] == 0) continue;
        --want[tgt[i]];
        while (res[free_slot] != -1) ++free_slot;
        res[free_slot] = tgt[i];
      }
    }
  }
  return out;
}

std::vector<MigrationVolume> volume_per_layer(const PlacementPair& pair) {
  const std::int64_t sc = pair.current_per_gpu(), st = pair.target_per_gpu();
  std::vector<MigrationVolume> out(static_cast<std::size_t>(pair.layers));
  // held[e] == g + 1: e is in GPU g's current slots; sent[e] == g + 1: g already
  // counted a copy of e (stamps, so nothing is cleared per GPU).
  std::vector<std::int64_t> held(static_cast<std::size_t>(pair.experts)),
      sent(static_cast<std::size_t>(pair.experts));
  for (int l = 0; l < pair.layers; ++l) {
    std::fill(held.begin(), held.end(), 0);
    std::fill(sent.begin(), sent.end(), 0);
    for (int g = 0; g < pair.gpus; ++g) {
      const std::int64_t* cur = pair.current + l * pair.current_slots + g * sc;
      const std::int64_t* tgt = pair.target + l * pair.target_slots + g * st;
      for (std::int64_t i = 0; i < sc; ++i) held[cur[i]] = g + 1;
      for (std::int64_t i = 0; i < st; ++i) {
        if (i >= sc || cur[i] != tgt[i]) ++out[l].naive;
        if (held[tgt[i]] != g + 1 && sent[tgt[i]] != g + 1) {
          sent[tgt[i]] = g + 1;
          ++out[l].matched;
        }
      }
    }
  }
  return out;
}

std::vector<Transfer> plan_transfers(const PlacementPair& pair, const std::vector<int>& node_of) {
  const std::int64_t sc = pair.current_per_gpu(), st = pair.target_per_gpu();
  const int R = pair.gpus;
  std::vector<Transfer> out;
  std::vector<std::int64_t> copies(static_cast<std::size_t>(R), 0);  // sent so far, per GPU
  std::vector<std::vector<int>> holders(static_cast<std::size_t>(pair.experts));
  std::vector<int> want;
  for (int l = 0; l < pair.layers; ++l) {
    for (auto& h : holders) h.clear();
    for (int g = 0; g < R; ++g) {
      const std::int64_t* cur = pair.current + l * pair.current_slots + g * sc;
      for (std::int64_t i = 0; i < sc; ++i) {
        std::vector<int>& h = holders[cur[i]];
        if (h.empty() || h.back() != g) h.push_back(g);
      }
    }
    for (int g = 0; g < R; ++g) {
      const std::int64_t* tgt = pair.target + l * pair.target_slots + g * st;
      want.assign(tgt, tgt + st);
      std::sort(want.begin(), want.end());
      want.erase(std::unique(want.begin(), want.end()), want.end());
      for (const int e : want) {
        const std::vector<int>& h = holders[e];
        if (std::binary_search(h.begin(), h.end(), g)) continue;  // already here
        const bool local =
            std::any_of(h.begin(), h.end(), [&](int r) { return node_of[r] == node_of[g]; });
        int best = -1;
        for (const int r : h) {
          if (local && node_of[r] != node_of[g]) continue;
          if (best < 0 || copies[r] < copies[best] ||
              (copies[r] == copies[best] && (r - g + R) % R < (best - g + R) % R))
            best = r;
        }
        ++copies[best];
        out.push_back({l, e, best, g});
      }
    }
  }
  return out;
}

}  // namespace epx::balancer::detail

namespace epx::balancer {

Placement match_slots(const Placement& current, const Placement& target, int num_gpus) {
  const detail::PlacementPair pair = detail::check_pair("match_slots", current, target, num_gpus);
  detail::Shape s;
  s.layers = pair.layers;
  s.experts = pair.experts;
  s.replicas = static_cast<int>(pair.target_slots);
  return detail::assemble(detail::match_phy2log(pair), s);
}

MigrationVolume migration_volume(const Placement& current, const Placement& target, int num_gpus) {
  const detail::PlacementPair pair =
      detail::check_pair("migration_volume", current, target, num_gpus);
  MigrationVolume total;
  for (const MigrationVolume& v : detail::volume_per_layer(pair)) {
    total.naive += v.naive;
    total.matched += v.matched;
  }
  return total;
}

}  // namespace epx::balancer
