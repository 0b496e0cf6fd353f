// The search: (1) replica counts by largest load per replica, never more
// replicas of an expert than GPUs while another expert can take the slot (a
// second replica on one GPU only adds a wasted slot); (2) greedy packing in
// descending replica load, each replica to the lightest non-full GPU that does
// not hold its expert yet; (3) swap descent: the best swap of a replica on the
// heaviest GPU with a lighter one on one of the lightest GPUs, while that
// lowers the heaviest; (4) replica moves: one slot changes from a replica of
// expert b to a new replica of an expert a on the heaviest GPU (both counts
// change), followed by a short swap descent, kept when the heaviest GPU gets
// lighter; (5) duplicates removed by swaps, or by giving the slot to another
// expert, without raising the heaviest GPU. Steps 3-5 also run from a given
// start (EPLB's placement), which they only improve.
#include "balancer/node_search.hpp"

#include <algorithm>
#include <cstdint>
#include <numeric>

namespace epx::balancer::detail {

namespace {

// One candidate placement of the node and its GPU loads.
struct State {
  std::vector<int> count;           // [n] replicas of each expert
  std::vector<double> per_replica;  // [n] load of each replica: load / count
  std::vector<int> item;            // [gpus * per_gpu] expert of each slot, GPU-major
  std::vector<int> held;            // [gpus * n] replicas of expert e on GPU g
  std::vector<double> load;         // [gpus]
};

class NodeSearch {
 public:
  explicit NodeSearch(const NodeProblem& p)
      : w_(p.load), n_(p.experts), gpus_(p.gpus), per_gpu_(p.slots / p.gpus) {
    double total = 0;
    for (int e = 0; e < n_; ++e) total += w_[e];
    // Improvements smaller than this are rounding, not progress.
    tol_ = 1e-6 * (total / gpus_ + 1e-300);
    bound_ = std::max(node_lower_bound(p), p.good_enough);
    // Work (replica pairs looked at) allowed per slot: enough to reach the
    // bound or a local optimum on the shapes measured (epx-bench eplb), and a
    // cap on long searches for small gains (e.g. nearly balanced global
    // placements, where swaps keep finding improvements of 1e-5).
    budget_ = kWorkPerSlot * p.slots * std::min(p.gpus, static_cast<int>(kPartners));
  }

  // Searches from the fresh start (1, 2 below) and, when given, from `start`
  // (e.g. EPLB's placement of the node); returns both results.
  std::vector<NodePlacement> run(const int* start) {
    std::vector<NodePlacement> out;
    State s = fresh();
    search(s, 1.0);
    out.push_back(result(s));
    if (start != nullptr) {
      s = from_slots(start);
      search(s, kSecondStartShare);
      out.push_back(result(s));
    }
    return out;
  }

  State fresh() const {
    State s;
    choose_counts(s);
    pack_greedy(s);
    return s;
  }

  State from_slots(const int* slots) const {
    State s;
    s.item.assign(slots, slots + static_cast<std::size_t>(gpus_) * per_gpu_);
    s.count.assign(n_, 0);
    for (int e : s.item) ++s.count[e];
    s.per_replica.resize(n_);
    for (int e = 0; e < n_; ++e) s.per_replica[e] = w_[e] / s.count[e];
    s.held.assign(static_cast<std::size_t>(gpus_) * n_, 0);
    s.load.assign(gpus_, 0.0);
    for (int g = 0; g < gpus_; ++g) {
      for (int i = 0; i < per_gpu_; ++i) ++held(s, g, slots_of(s, g)[i]);
      recompute_load(s, g);
    }
    return s;
  }

  // Swap descent, replica moves, duplicate removal, within budget_share of
  // the work budget. A move is kept only when it lowers the heaviest GPU, so the
  // search ends; the caps only bound the time.
  void search(State& s, double budget_share) const {
    work_ = budget_ * (1 - budget_share);
    swap_descent(s, 4 * gpus_ * per_gpu_);
    for (int step = 0; step < 4 * n_ + gpus_; ++step) {
      if (at_bound(s) || !improve_by_moving_replica(s)) break;
    }
    remove_duplicates(s);
  }

  std::int64_t duplicates(const State& s) const {
    std::int64_t d = 0;
    for (int h : s.held) d += h > 1 ? h - 1 : 0;
    return d;
  }

  NodePlacement result(const State& s) const {
    NodePlacement r;
    r.slots = s.item;
    for (int g = 0; g < gpus_; ++g)
      std::sort(r.slots.begin() + g * per_gpu_, r.slots.begin() + (g + 1) * per_gpu_);
    r.max_load = s.load[heaviest(s)];
    r.duplicates = duplicates(s);
    return r;
  }

  bool at_bound(const State& s) const {
    return work_ > budget_ || s.load[heaviest(s)] <= bound_ + tol_;
  }

  double replica_load(const State& s, int e) const { return s.per_replica[e]; }
  void set_count(State& s, int e, int count) const {
    s.count[e] = count;
    s.per_replica[e] = w_[e] / count;
  }
  static int& held(State& s, int n, int gpu, int e) {
    return s.held[static_cast<std::size_t>(gpu) * n + e];
  }
  int& held(State& s, int gpu, int e) const { return held(s, n_, gpu, e); }
  int* slots_of(State& s, int gpu) const {
    return s.item.data() + static_cast<std::size_t>(gpu) * per_gpu_;
  }

  void choose_counts(State& s) const {
    s.count.assign(n_, 1);
    s.per_replica.assign(w_, w_ + n_);
    int cap = gpus_;
    for (int extra = gpus_ * per_gpu_ - n_; extra > 0; --extra) {
      int best = -1;
      for (int e = 0; e < n_; ++e) {
        if (s.count[e] < cap && (best < 0 || replica_load(s, e) > replica_load(s, best))) best = e;
      }
      if (best < 0) {  // every expert is on every GPU: duplicates are forced
        cap += gpus_;
        ++extra;
        continue;
      }
      set_count(s, best, s.count[best] + 1);
    }
  }

  void pack_greedy(State& s) const {
    std::vector<int> experts(n_);
    std::iota(experts.begin(), experts.end(), 0);
    std::stable_sort(experts.begin(), experts.end(),
                     [&](int a, int b) { return replica_load(s, a) > replica_load(s, b); });
    s.item.assign(static_cast<std::size_t>(gpus_) * per_gpu_, -1);
    s.held.assign(static_cast<std::size_t>(gpus_) * n_, 0);
    s.load.assign(gpus_, 0.0);
    std::vector<int> filled(gpus_, 0);
    for (int e : experts) {
      for (int r = 0; r < s.count[e]; ++r) {
        int best = -1;
        bool best_fresh = false;  // the GPU does not hold e yet
        for (int g = 0; g < gpus_; ++g) {
          if (filled[g] == per_gpu_) continue;
          const bool fresh = held(s, g, e) == 0;
          if (best < 0 || (fresh && !best_fresh) ||
              (fresh == best_fresh && s.load[g] < s.load[best])) {
            best = g;
            best_fresh = fresh;
          }
        }
        slots_of(s, best)[filled[best]++] = e;
        ++held(s, best, e);
        s.load[best] += replica_load(s, e);
      }
    }
  }

  // Loads summed afresh (not updated by differences), so that equal
  // placements always have bit-identical loads.
  void recompute_load(State& s, int g) const {
    double sum = 0;
    for (int i = 0; i < per_gpu_; ++i) sum += replica_load(s, slots_of(s, g)[i]);
    s.load[g] = sum;
  }

  static int heaviest(const State& s) {
    return static_cast<int>(std::max_element(s.load.begin(), s.load.end()) - s.load.begin());
  }

  void swap_slots(State& s, int g, int i, int o, int j) const {
    int& a = slots_of(s, g)[i];
    int& b = slots_of(s, o)[j];
    --held(s, g, a);
    --held(s, o, b);
    std::swap(a, b);
    ++held(s, g, a);
    ++held(s, o, b);
    recompute_load(s, g);
    recompute_load(s, o);
  }

  // The best swap of a replica on the heaviest GPU with a lighter replica
  // elsewhere that lowers the larger of the two GPUs' loads below the
  // heaviest's, creating no duplicate.
  bool improve_by_swap(State& s) const {
    const int h = heaviest(s);
    const double top = s.load[h];
    // Partners: the lightest GPUs, where a swap has the most room; a few
    // suffice, and bound the cost on many GPUs (global placement).
    std::vector<int>& partners = partners_;
    partners.clear();
    for (int o = 0; o < gpus_; ++o) {
      if (o != h && s.load[o] < top - tol_) partners.push_back(o);
    }
    if (partners.size() > kPartners) {
      std::partial_sort(
          partners.begin(), partners.begin() + kPartners, partners.end(),
          [&](int x, int y) { return s.load[x] < s.load[y] || (s.load[x] == s.load[y] && x < y); });
      partners.resize(kPartners);
    }
    work_ += static_cast<double>(partners.size()) * per_gpu_ * per_gpu_;
    double best = top - tol_;
    int bi = -1, bo = -1, bj = -1;
    for (const int o : partners) {
      const double room = top - s.load[o];  // a swap moves d in (0, room) from h to o
      for (int i = 0; i < per_gpu_; ++i) {
        const int a = slots_of(s, h)[i];
        const double load_a = s.per_replica[a];
        for (int j = 0; j < per_gpu_; ++j) {
          const int b = slots_of(s, o)[j];
          const double d = load_a - s.per_replica[b];
          if (d <= tol_ || d >= room) continue;
          const double pair_max = std::max(top - d, s.load[o] + d);
          // Checked last: most pairs fail on the loads alone.
          if (pair_max < best && held(s, o, a) == 0 && held(s, h, b) == 0) {
            best = pair_max;
            bi = i;
            bo = o;
            bj = j;
          }
        }
      }
    }
    if (bi < 0) return false;
    swap_slots(s, h, bi, bo, bj);
    return true;
  }

  // Each step lowers the heaviest GPU or the number of GPUs at the maximum.
  void swap_descent(State& s, int max_steps) const {
    for (int step = 0; step < max_steps; ++step) {
      if (at_bound(s) || !improve_by_swap(s)) return;
    }
  }

  // Slot of x holding b becomes a new replica of a.
  void move_replica(State& s, int b, int x, int a) const {
    int* slot = std::find(slots_of(s, x), slots_of(s, x) + per_gpu_, b);
    *slot = a;
    --held(s, x, b);
    ++held(s, x, a);
    set_count(s, b, s.count[b] - 1);
    set_count(s, a, s.count[a] + 1);
    for (int g = 0; g < gpus_; ++g) {
      if (g == x || held(s, g, a) > 0 || held(s, g, b) > 0) recompute_load(s, g);
    }
  }

  // Tries moves that give an expert a on the heaviest GPU one more replica,
  // taken from the experts b whose replicas would grow the least, each
  // followed by a swap descent; keeps the first that improves the state.
  bool improve_by_moving_replica(State& s) const {
    // The time/quality knobs: receivers a (the heaviest replicas on the
    // heaviest GPU), donors b per receiver, swaps after each move.
    // Measured on Zipf loads (epx-bench eplb): 3 / 2 / one swap per GPU (at
    // most kPartners) gives
    // most of the gain of wider searches at a third of their time.
    constexpr std::size_t kReceivers = 3;
    constexpr int kDonors = 2;
    const int kTrialSwaps = std::min(gpus_, static_cast<int>(kPartners));
    const int h = heaviest(s);
    const double top = s.load[h];
    std::vector<int> receivers(slots_of(s, h), slots_of(s, h) + per_gpu_);
    std::sort(receivers.begin(), receivers.end(), [&](int x, int y) {
      return replica_load(s, x) != replica_load(s, y) ? replica_load(s, x) > replica_load(s, y)
                                                      : x < y;
    });
    receivers.erase(std::unique(receivers.begin(), receivers.end()), receivers.end());
    if (receivers.size() > kReceivers) receivers.resize(kReceivers);
    for (const int a : receivers) {
      if (w_[a] <= 0) continue;
      // Donors: the experts with two or more replicas whose load per replica
      // after giving one up is the smallest.
      int donors[kDonors];
      int num_donors = 0;
      for (int b = 0; b < n_; ++b) {
        if (b == a || s.count[b] < 2) continue;
        const double grown = w_[b] / (s.count[b] - 1);
        int k = num_donors < kDonors ? num_donors++ : kDonors;
        while (k > 0 && w_[donors[k - 1]] / (s.count[donors[k - 1]] - 1) > grown) {
          if (k < kDonors) donors[k] = donors[k - 1];
          --k;
        }
        if (k < kDonors) donors[k] = b;
      }
      for (int d = 0; d < num_donors; ++d) {
        const int b = donors[d];
        // The lightest GPU holding b and not a gives up b's replica.
        int x = -1;
        for (int g = 0; g < gpus_; ++g) {
          if (held(s, g, b) > 0 && held(s, g, a) == 0 && (x < 0 || s.load[g] < s.load[x])) x = g;
        }
        if (x < 0) continue;
        // A trial copies the state (held: gpus x experts): work too.
        work_ += static_cast<double>(gpus_) * n_;
        State trial = s;
        move_replica(trial, b, x, a);
        swap_descent(trial, kTrialSwaps);
        const double trial_top = trial.load[heaviest(trial)];
        if (trial_top < top - tol_) {
          s = std::move(trial);
          return true;
        }
      }
    }
    return false;
  }

  // Swaps a duplicate replica with a replica of another expert on another GPU
  // when that keeps both GPUs at or below the heaviest load.
  void remove_duplicates(State& s) const {
    for (int g = 0; g < gpus_; ++g) {
      for (int i = 0; i < per_gpu_; ++i) {
        const int a = slots_of(s, g)[i];
        if (held(s, g, a) < 2) continue;
        double best = s.load[heaviest(s)];
        int bo = -1, bj = -1;
        for (int o = 0; o < gpus_; ++o) {
          if (o == g || held(s, o, a) > 0) continue;
          for (int j = 0; j < per_gpu_; ++j) {
            const int b = slots_of(s, o)[j];
            if (held(s, g, b) > 0) continue;
            const double d = replica_load(s, a) - replica_load(s, b);
            const double pair_max = std::max(s.load[g] - d, s.load[o] + d);
            if (pair_max <= best) {
              best = pair_max;
              bo = o;
              bj = j;
            }
          }
        }
        if (bo >= 0) {
          swap_slots(s, g, i, bo, bj);
        } else {
          give_duplicate_away(s, g, a);
        }
      }
    }
  }

  // The duplicate of a on GPU g becomes a new replica of an expert f not on g
  // (a loses a replica, f gains one), the f that leaves the heaviest GPU
  // lightest; done when the heaviest GPU does not get heavier.
  void give_duplicate_away(State& s, int g, int a) const {
    const double top = s.load[heaviest(s)];
    const double a_old = replica_load(s, a), a_new = w_[a] / (s.count[a] - 1);
    double best = top;
    int best_f = -1;
    for (int f = 0; f < n_; ++f) {
      if (held(s, g, f) > 0) continue;
      const double f_old = replica_load(s, f), f_new = w_[f] / (s.count[f] + 1);
      double worst = 0;
      for (int x = 0; x < gpus_ && worst <= best; ++x) {
        double v = s.load[x] + held(s, x, a) * (a_new - a_old) - held(s, x, f) * (f_old - f_new);
        if (x == g) v += f_new - a_new;
        worst = std::max(worst, v);
      }
      if (worst <= best) {
        best = worst;
        best_f = f;
      }
    }
    if (best_f >= 0) move_replica(s, a, g, best_f);
  }

  const double* w_;
  int n_, gpus_, per_gpu_;
  double tol_ = 0;
  double bound_ = 0;                           // a lower bound on the heaviest GPU's load
  static constexpr std::size_t kPartners = 8;  // GPUs a swap looks at
  static constexpr double kWorkPerSlot = 100;
  // The search from `start` gets half the budget: it starts from a good
  // placement, and global placements (one node of many GPUs) stay fast.
  static constexpr double kSecondStartShare = 0.5;
  double budget_ = 0;                  // work allowed
  mutable double work_ = 0;            // work done
  mutable std::vector<int> partners_;  // scratch of improve_by_swap
};

}  // namespace

// Giving each extra slot to the largest load per replica minimises the
// largest load per replica; a GPU holding that replica is at least as heavy.
double node_lower_bound(const NodeProblem& p) {
  std::vector<int> count(p.experts, 1);
  for (int extra = p.slots - p.experts; extra > 0; --extra) {
    int best = 0;
    for (int e = 1; e < p.experts; ++e) {
      if (p.load[e] / count[e] > p.load[best] / count[best]) best = e;
    }
    ++count[best];
  }
  double total = 0, largest = 0;
  for (int e = 0; e < p.experts; ++e) {
    total += p.load[e];
    largest = std::max(largest, p.load[e] / count[e]);
  }
  return std::max(total / p.gpus, largest);
}

std::vector<NodePlacement> place_node(const NodeProblem& problem) {
  return NodeSearch(problem).run(problem.start);
}

}  // namespace epx::balancer::detail
