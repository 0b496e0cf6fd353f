#include "balancer/budget.hpp"

#include <algorithm>
#include <numeric>

namespace epx::balancer::detail {

namespace {

// The options on the lower convex hull of (copies, ratio), cheapest first:
// each costs more and is lighter than the one before, and the gain per copy
// falls from one segment to the next. The first has the fewest copies.
std::vector<int> lower_hull(const std::vector<LayerOption>& o) {
  std::vector<int> order(o.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
    return o[a].copies != o[b].copies ? o[a].copies < o[b].copies : o[a].ratio < o[b].ratio;
  });
  std::vector<int> hull;
  for (const int c : order) {
    // Only options lighter than every cheaper one are worth their copies.
    if (!hull.empty() && o[c].ratio >= o[hull.back()].ratio) continue;
    // Drop the last vertex while it lies on or above the line from the one
    // before it to c (it gains less per copy than going on to c).
    while (hull.size() >= 2) {
      const LayerOption& a = o[hull[hull.size() - 2]];
      const LayerOption& b = o[hull.back()];
      const double lhs = (b.ratio - a.ratio) * static_cast<double>(o[c].copies - a.copies);
      const double rhs = (o[c].ratio - a.ratio) * static_cast<double>(b.copies - a.copies);
      if (lhs < rhs) break;
      hull.pop_back();
    }
    hull.push_back(c);
  }
  return hull;
}

struct Segment {
  int layer = 0, k = 0;  // from hull vertex k - 1 to k
  std::int64_t copies = 0;
  double gain_per_copy = 0;
};

}  // namespace

std::vector<int> allocate_budget(const std::vector<std::vector<LayerOption>>& options,
                                 std::int64_t budget, double min_gain_per_copy) {
  const int layers = static_cast<int>(options.size());
  std::vector<std::vector<int>> hulls(layers);
  std::vector<Segment> segments;
  std::vector<int> chosen(layers);
  std::int64_t spent = 0;
  for (int l = 0; l < layers; ++l) {
    const std::vector<LayerOption>& o = options[l];
    hulls[l] = lower_hull(o);
    chosen[l] = hulls[l][0];
    spent += o[chosen[l]].copies;  // 0: option 0 has no copies
    for (std::size_t k = 1; k < hulls[l].size(); ++k) {
      const LayerOption& a = o[hulls[l][k - 1]];
      const LayerOption& b = o[hulls[l][k]];
      const std::int64_t copies = b.copies - a.copies;
      segments.push_back({l, static_cast<int>(k), copies, (a.ratio - b.ratio) / copies});
    }
  }
  std::stable_sort(segments.begin(), segments.end(), [](const Segment& a, const Segment& b) {
    return a.gain_per_copy > b.gain_per_copy;
  });
  std::vector<int> next(layers, 1);
  std::vector<char> blocked(layers, 0);
  for (const Segment& s : segments) {
    if (s.gain_per_copy < min_gain_per_copy) break;
    // A layer's segments come in hull order (falling gains); once one does
    // not fit, the later ones (which start where it ends) cannot be taken.
    if (blocked[s.layer] || s.k != next[s.layer]) continue;
    if (spent + s.copies > budget) {
      blocked[s.layer] = 1;
      continue;
    }
    spent += s.copies;
    chosen[s.layer] = hulls[s.layer][s.k];
    ++next[s.layer];
  }
  // What is left may still pay for an option off the hull, or a shorter step.
  for (int l = 0; l < layers; ++l) {
    const std::vector<LayerOption>& o = options[l];
    const LayerOption was = o[chosen[l]];
    int best = chosen[l];
    for (std::size_t i = 0; i < o.size(); ++i) {
      const std::int64_t extra = o[i].copies - was.copies;
      if (extra > budget - spent || o[i].ratio >= o[best].ratio) continue;
      if (was.ratio - o[i].ratio < min_gain_per_copy * static_cast<double>(extra)) continue;
      best = static_cast<int>(i);
    }
    spent += o[best].copies - was.copies;
    chosen[l] = best;
  }
  return chosen;
}

}  // namespace epx::balancer::detail
