// The search behind search_layer: each step lightens the heaviest GPU h with
// the move that buys the most load off h per expert copy (a move that needs
// no new copy first), among
//   - swaps of a replica on h with a lighter replica on one of the 8
//     lightest other GPUs of h's node (up to two copies), and
//   - reassignments of one slot from an expert with several replicas to
//     another expert of the node (one copy at most): a new replica for an
//     expert on h, in a slot of another GPU, or a slot of h given to an expert
//     h does not hold. These change replica counts, which is what a drift of
//     popularity needs (an expert that turned hot needs replicas that one
//     that turned cold no longer does).
// A move must leave every GPU it touches lighter than h was. The search ends
// when no move lightens h, when every move would exceed the copy cap, or
// after 2 x P steps.
#include "balancer/incremental_search.hpp"

#include <algorithm>

namespace epx::balancer::detail {

namespace {

// Steps that lighten the heaviest GPU by less than this fraction of the mean
// GPU load are not worth a copy (1e-4 of max/mean), and in global mode,
// where balance is nearly perfect, they would make the path long.
constexpr double kProgress = 1e-4;
constexpr std::size_t kPartners = 8;

struct Move {
  bool swap = false;  // swap slots i and j; else slot j gets expert y
  int i = 0, j = 0;
  std::int64_t y = 0;
  double gain = 0;  // how much lighter h gets (and every touched GPU stays below h was)
  int copies = 0;   // change in the layer's copies
};

// Whether a is better than b: a move that needs no new copy before one that
// does; then the larger gain, or the larger gain per copy.
bool better(const Move& a, const Move& b) {
  const bool free_a = a.copies <= 0, free_b = b.copies <= 0;
  if (free_a != free_b) return free_a;
  if (free_a) return a.gain > b.gain;
  return a.gain * b.copies > b.gain * a.copies;
}

class LayerSearch {
 public:
  LayerSearch(const SearchLayer& in, const Shape& s)
      : w_(in.load),
        experts_(s.experts),
        replicas_(s.replicas),
        gpus_(s.gpus),
        per_gpu_(s.slots_per_gpu()),
        gpus_per_node_(s.gpus / s.used_nodes()),
        max_copies_(in.max_copies) {
    slot_.assign(in.start, in.start + replicas_);
    count_.assign(experts_, 0);
    held_.assign(static_cast<std::size_t>(gpus_) * experts_, 0);
    had_.assign(held_.size(), 0);
    home_.assign(experts_, 0);
    slots_of_.assign(experts_, {});
    delta_.assign(gpus_, 0.0);
    for (int p = 0; p < replicas_; ++p) {
      const std::int64_t e = slot_[p];
      ++count_[e];
      ++held(gpu(p), e);
      slots_of_[e].push_back(p);
      home_[e] = node(gpu(p));
      had_[static_cast<std::size_t>(gpu(p)) * experts_ + in.current[p]] = 1;
    }
    for (std::size_t k = 0; k < held_.size(); ++k) copies_ += held_[k] > 0 && !had_[k];
    node_experts_.assign(s.used_nodes(), {});
    double total = 0;
    for (int e = 0; e < experts_; ++e) {
      node_experts_[home_[e]].push_back(e);
      total += w_[e];
    }
    tol_ = kProgress * total / gpus_;
    update_loads();
  }

  SearchPath run() {
    SearchPath path;
    record(path);
    if (tol_ <= 0) return path;  // no load: nothing to balance
    for (int step = 0; step < 2 * replicas_; ++step) {
      const int h = static_cast<int>(std::max_element(load_.begin(), load_.end()) - load_.begin());
      Move best;
      bool found = false;
      auto offer = [&](const Move& m) {
        if (m.gain <= tol_ || copies_ + m.copies > max_copies_) return;
        if (!found || better(m, best)) {
          best = m;
          found = true;
        }
      };
      propose(h, offer);
      if (!found) break;
      SlotChange change;
      if (best.swap) {
        const std::int64_t x = slot_[best.i], y = slot_[best.j];
        change = {2, {best.i, best.j}, {y, x}};
      } else {
        change = {1, {best.j, 0}, {best.y, 0}};
      }
      for (int k = 0; k < change.n; ++k) set_slot(change.slot[k], change.expert[k]);
      update_loads();
      path.steps.push_back(change);
      record(path);
    }
    return path;
  }

 private:
  int gpu(int p) const { return p / per_gpu_; }
  int node(int g) const { return g / gpus_per_node_; }
  int& held(int g, std::int64_t e) { return held_[static_cast<std::size_t>(g) * experts_ + e]; }
  bool had(int g, std::int64_t e) const {
    return had_[static_cast<std::size_t>(g) * experts_ + e] != 0;
  }
  double per_replica(std::int64_t e) const { return w_[e] / count_[e]; }

  void update_loads() {
    load_.assign(gpus_, 0.0);
    for (int p = 0; p < replicas_; ++p) load_[gpu(p)] += per_replica(slot_[p]);
  }

  void record(SearchPath& path) const {
    path.copies.push_back(copies_);
    path.max_load.push_back(*std::max_element(load_.begin(), load_.end()));
  }

  void set_slot(int p, std::int64_t y) {
    const std::int64_t x = slot_[p];
    const int g = gpu(p);
    if (--held(g, x) == 0 && !had(g, x)) --copies_;
    if (held(g, y)++ == 0 && !had(g, y)) ++copies_;
    --count_[x];
    ++count_[y];
    std::vector<int>& from = slots_of_[x];
    from.erase(std::find(from.begin(), from.end(), p));
    slots_of_[y].push_back(p);
    slot_[p] = y;
  }

  // Every move of the kinds above that lightens h, passed to offer().
  template <class Offer>
  void propose(int h, Offer&& offer) {
    const int first = node(h) * gpus_per_node_ * per_gpu_;
    const int last = first + gpus_per_node_ * per_gpu_;
    // Swap partners: the node's lightest GPUs (as in node_search.cpp), which
    // can take the most off h; a swap with a heavier one rarely helps, and
    // in global mode all GPUs would make every step slow.
    partners_.clear();
    for (int g = first / per_gpu_; g < last / per_gpu_; ++g)
      if (g != h) partners_.push_back(g);
    const std::size_t keep = std::min(partners_.size(), kPartners);
    std::partial_sort(
        partners_.begin(), partners_.begin() + keep, partners_.end(),
        [&](int a, int b) { return load_[a] != load_[b] ? load_[a] < load_[b] : a < b; });
    partners_.resize(keep);
    // Only a slot whose expert has another replica can change expert.
    donors_.clear();
    for (int j = first; j < last; ++j)
      if (count_[slot_[j]] >= 2) donors_.push_back(j);
    for (int i = h * per_gpu_; i < (h + 1) * per_gpu_; ++i) {
      const std::int64_t x = slot_[i];
      for (const int o : partners_)
        for (int j = o * per_gpu_; j < (o + 1) * per_gpu_; ++j) offer(swap(h, i, j));
      // A new replica of x (on h) in a donor slot of another GPU.
      for (const int j : donors_)
        if (gpu(j) != h) offer(reassign(h, j, x));
      // Slot i to an expert of the node that h lacks.
      if (count_[x] >= 2)
        for (const int y : node_experts_[node(h)]) offer(reassign(h, i, y));
    }
  }

  Move swap(int h, int i, int j) {
    Move m;
    const int o = gpu(j);
    const std::int64_t x = slot_[i], y = slot_[j];
    if (x == y || held(o, x) > 0 || held(h, y) > 0) return m;
    const double d = per_replica(x) - per_replica(y);
    m.swap = true;
    m.i = i;
    m.j = j;
    m.gain = load_[h] - std::max(load_[h] - d, load_[o] + d);
    m.copies =
        !had(h, y) + !had(o, x) - (held(h, x) == 1 && !had(h, x)) - (held(o, y) == 1 && !had(o, y));
    return m;
  }

  // Slot j's expert x gives the slot to y: x's other replicas get heavier,
  // y's lighter. The gain is h's drop, unless a touched GPU ends heavier.
  Move reassign(int h, int j, std::int64_t y) {
    Move m;
    const int o = gpu(j);
    const std::int64_t x = slot_[j];
    if (x == y || count_[x] < 2 || held(o, y) > 0 || home_[y] != node(o)) return m;
    touched_.clear();
    auto add = [&](int g, double d) {
      if (delta_[g] == 0 && std::find(touched_.begin(), touched_.end(), g) == touched_.end())
        touched_.push_back(g);
      delta_[g] += d;
    };
    const double x_after = w_[x] / (count_[x] - 1), y_after = w_[y] / (count_[y] + 1);
    for (const int s : slots_of_[x])
      if (s != j) add(gpu(s), x_after - per_replica(x));
    for (const int s : slots_of_[y]) add(gpu(s), y_after - per_replica(y));
    add(o, y_after - per_replica(x));
    double peak = load_[h] + delta_[h];
    for (const int g : touched_) {
      peak = std::max(peak, load_[g] + delta_[g]);
      delta_[g] = 0;
    }
    m.j = j;
    m.y = y;
    m.gain = load_[h] - peak;
    m.copies = !had(o, y) - (held(o, x) == 1 && !had(o, x));
    return m;
  }

  const double* w_;
  const int experts_, replicas_, gpus_, per_gpu_, gpus_per_node_;
  const std::int64_t max_copies_;
  double tol_ = 0;
  std::int64_t copies_ = 0;                 // (GPU, expert) held now, not in the current placement
  std::vector<std::int64_t> slot_;          // [P] expert of each slot
  std::vector<int> count_;                  // [E] replicas
  std::vector<int> held_;                   // [G*E] replicas of e on g now
  std::vector<char> had_;                   // [G*E] e on g in the current placement
  std::vector<int> home_;                   // [E] the node of e's replicas
  std::vector<std::vector<int>> slots_of_;  // [E] e's slots
  std::vector<std::vector<int>> node_experts_;
  std::vector<double> load_;   // [G]
  std::vector<double> delta_;  // [G] scratch of reassign(), zero between calls
  std::vector<int> touched_;
  std::vector<int> partners_, donors_;
};

}  // namespace

SearchPath search_layer(const SearchLayer& layer, const Shape& shape) {
  return LayerSearch(layer, shape).run();
}

void replay(const std::int64_t* start, const SearchPath& path, std::size_t steps, int replicas,
            std::int64_t* out) {
  std::copy(start, start + replicas, out);
  for (std::size_t k = 0; k < steps; ++k) {
    const SlotChange& c = path.steps[k];
    for (int n = 0; n < c.n; ++n) out[c.slot[n]] = c.expert[n];
  }
}

}  // namespace epx::balancer::detail
