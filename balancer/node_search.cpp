// The search: (1) replica counts by largest load per replica, never more
// replicas of an expert than GPUs while another expert can take the slot (a
// second replica on one GPU only adds a wasted slot); (2) greedy packing in
// descending replica load, each replica to the lightest non-full GPU that does
// not hold its expert yet; (3) local search from the heaviest GPU: the best
// swap of two replicas with a lighter GPU, else the best move of one replica
// slot from one expert to another (changing both counts), until neither lowers
// the heaviest GPU; (4) swaps that remove remaining same-GPU duplicates without
// raising the heaviest GPU.
#include "balancer/node_search.hpp"

#include <algorithm>
#include <numeric>

namespace epx::balancer::detail {

namespace {

class NodeSearch {
 public:
  explicit NodeSearch(const NodeProblem& p)
      : w_(p.load), n_(p.experts), gpus_(p.gpus), per_gpu_(p.slots / p.gpus) {
    double total = 0;
    for (int e = 0; e < n_; ++e) total += w_[e];
    // Improvements smaller than this are rounding, not progress.
    tol_ = 1e-12 * (total / gpus_ + 1e-300);
  }

  std::vector<int> run() {
    choose_counts();
    pack_greedy();
    // Each accepted step lowers the heaviest GPU or the number of GPUs at the
    // maximum, so the search ends; the cap only bounds the time.
    const int max_steps = 8 * (gpus_ * per_gpu_ + n_);
    for (int step = 0; step < max_steps; ++step) {
      if (!improve_by_swap() && !improve_by_moving_replica()) break;
    }
    remove_duplicates();
    std::vector<int> out = item_;
    for (int g = 0; g < gpus_; ++g)
      std::sort(out.begin() + g * per_gpu_, out.begin() + (g + 1) * per_gpu_);
    return out;
  }

 private:
  double replica_load(int e) const { return w_[e] / count_[e]; }
  int& held(int gpu, int e) { return held_[static_cast<std::size_t>(gpu) * n_ + e]; }
  int* slots_of(int gpu) { return item_.data() + static_cast<std::size_t>(gpu) * per_gpu_; }

  void choose_counts() {
    count_.assign(n_, 1);
    int cap = gpus_;
    for (int extra = gpus_ * per_gpu_ - n_; extra > 0; --extra) {
      int best = -1;
      for (int e = 0; e < n_; ++e) {
        if (count_[e] < cap && (best < 0 || replica_load(e) > replica_load(best))) best = e;
      }
      if (best < 0) {  // every expert is on every GPU: duplicates are forced
        cap += gpus_;
        ++extra;
        continue;
      }
      ++count_[best];
    }
  }

  void pack_greedy() {
    std::vector<int> experts(n_);
    std::iota(experts.begin(), experts.end(), 0);
    std::stable_sort(experts.begin(), experts.end(),
                     [&](int a, int b) { return replica_load(a) > replica_load(b); });
    item_.assign(static_cast<std::size_t>(gpus_) * per_gpu_, -1);
    held_.assign(static_cast<std::size_t>(gpus_) * n_, 0);
    load_.assign(gpus_, 0.0);
    std::vector<int> filled(gpus_, 0);
    for (int e : experts) {
      for (int r = 0; r < count_[e]; ++r) {
        int best = -1;
        bool best_fresh = false;  // the GPU does not hold e yet
        for (int g = 0; g < gpus_; ++g) {
          if (filled[g] == per_gpu_) continue;
          const bool fresh = held(g, e) == 0;
          if (best < 0 || (fresh && !best_fresh) ||
              (fresh == best_fresh && load_[g] < load_[best])) {
            best = g;
            best_fresh = fresh;
          }
        }
        slots_of(best)[filled[best]++] = e;
        ++held(best, e);
        load_[best] += replica_load(e);
      }
    }
  }

  void recompute_loads() {
    for (int g = 0; g < gpus_; ++g) {
      double sum = 0;
      for (int i = 0; i < per_gpu_; ++i) sum += replica_load(slots_of(g)[i]);
      load_[g] = sum;
    }
  }

  int heaviest() const {
    return static_cast<int>(std::max_element(load_.begin(), load_.end()) - load_.begin());
  }

  void swap_slots(int g, int i, int o, int j) {
    int& a = slots_of(g)[i];
    int& b = slots_of(o)[j];
    --held(g, a);
    --held(o, b);
    std::swap(a, b);
    ++held(g, a);
    ++held(o, b);
    recompute_loads();
  }

  // The best swap of a replica on the heaviest GPU with a lighter replica
  // elsewhere that lowers the larger of the two GPUs' loads below the
  // heaviest's, creating no duplicate.
  bool improve_by_swap() {
    const int h = heaviest();
    const double top = load_[h];
    double best = top - tol_;
    int bi = -1, bo = -1, bj = -1;
    for (int o = 0; o < gpus_; ++o) {
      if (o == h || load_[o] >= top - tol_) continue;
      for (int i = 0; i < per_gpu_; ++i) {
        const int a = slots_of(h)[i];
        if (held(o, a) > 0) continue;
        for (int j = 0; j < per_gpu_; ++j) {
          const int b = slots_of(o)[j];
          if (held(h, b) > 0) continue;
          const double d = replica_load(a) - replica_load(b);
          if (d <= tol_) continue;
          const double pair_max = std::max(top - d, load_[o] + d);
          if (pair_max < best) {
            best = pair_max;
            bi = i;
            bo = o;
            bj = j;
          }
        }
      }
    }
    if (bi < 0) return false;
    swap_slots(h, bi, bo, bj);
    return true;
  }

  // The best change of one slot from a replica of expert b (on GPU x) to a new
  // replica of an expert a on the heaviest GPU: every GPU holding a gets
  // lighter, every GPU holding b heavier. Taken when all of them end below the
  // heaviest GPU's load.
  bool improve_by_moving_replica() {
    const int h = heaviest();
    const double top = load_[h];
    double best = top - tol_;
    int best_a = -1, best_x = -1, best_b = -1;
    for (int i = 0; i < per_gpu_; ++i) {
      const int a = slots_of(h)[i];
      if (std::find(slots_of(h), slots_of(h) + i, a) != slots_of(h) + i) continue;  // seen
      const double a_old = replica_load(a);
      const double a_new = w_[a] / (count_[a] + 1);
      for (int b = 0; b < n_; ++b) {
        if (b == a || count_[b] < 2) continue;
        const double b_old = replica_load(b);
        const double b_new = w_[b] / (count_[b] - 1);
        for (int x = 0; x < gpus_; ++x) {
          if (held(x, b) == 0 || held(x, a) > 0) continue;
          double worst = 0;
          for (int g = 0; g < gpus_ && worst < best; ++g) {
            // GPUs the move leaves alone stay at or below the heaviest, and
            // the heaviest (which holds a) gets lighter: progress either way.
            if (g != x && held(g, a) == 0 && held(g, b) == 0) continue;
            double v = load_[g] - held(g, a) * (a_old - a_new) + held(g, b) * (b_new - b_old);
            if (g == x) v += a_new - b_new;
            worst = std::max(worst, v);
          }
          if (worst < best) {
            best = worst;
            best_a = a;
            best_b = b;
            best_x = x;
          }
        }
      }
    }
    if (best_a < 0) return false;
    int* slot = std::find(slots_of(best_x), slots_of(best_x) + per_gpu_, best_b);
    *slot = best_a;
    --held(best_x, best_b);
    ++held(best_x, best_a);
    --count_[best_b];
    ++count_[best_a];
    recompute_loads();
    return true;
  }

  // Swaps a duplicate replica with a replica of another expert on another GPU
  // when that keeps both GPUs at or below the heaviest load.
  void remove_duplicates() {
    for (int g = 0; g < gpus_; ++g) {
      for (int i = 0; i < per_gpu_; ++i) {
        const int a = slots_of(g)[i];
        if (held(g, a) < 2) continue;
        const double top = load_[heaviest()];
        double best = top;
        int bo = -1, bj = -1;
        for (int o = 0; o < gpus_; ++o) {
          if (o == g || held(o, a) > 0) continue;
          for (int j = 0; j < per_gpu_; ++j) {
            const int b = slots_of(o)[j];
            if (held(g, b) > 0) continue;
            const double d = replica_load(a) - replica_load(b);
            const double pair_max = std::max(load_[g] - d, load_[o] + d);
            if (pair_max <= best) {
              best = pair_max;
              bo = o;
              bj = j;
            }
          }
        }
        if (bo >= 0) swap_slots(g, i, bo, bj);
      }
    }
  }

  const double* w_;
  int n_, gpus_, per_gpu_;
  double tol_ = 0;
  std::vector<int> count_;    // [n] replicas of each expert
  std::vector<int> item_;     // [gpus * per_gpu] expert of each slot, GPU-major
  std::vector<int> held_;     // [gpus * n] replicas of expert e on GPU g
  std::vector<double> load_;  // [gpus]
};

}  // namespace

std::vector<int> place_node(const NodeProblem& problem) {
  return NodeSearch(problem).run();
}

}  // namespace epx::balancer::detail
