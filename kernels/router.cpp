// DeepSeek-V3 routing: scores, group-limited top-k on scores + bias, and the
// normalised gate weights; the backward through the weights and the scores.
#include <cmath>
#include <limits>

#include <epx/model_kernels.hpp>

#include "core/check.hpp"
#include "kernels/softmax.hpp"

namespace epx::kernels {

namespace {

// Kept groups are a bit mask, group scores a stack array: no allocation per row.
constexpr int kMaxGroups = 64;

// The selection order: a before b when its value is higher, or equal at a
// lower index. Picking "the first item after the previous pick" k times gives
// the top k sorted, ties to the lower index, with no mask and no sort.
struct Pick {
  float value;
  std::int64_t index;
};
inline bool before(float va, std::int64_t ia, float vb, std::int64_t ib) {
  return va > vb || (va == vb && ia < ib);
}

void check_params(const RouterParams& p, const char* op) {
  EPX_CHECK(p.num_experts > 0, InvalidArgument, op, ": num_experts = ", p.num_experts,
            ", expected > 0");
  EPX_CHECK(p.top_k >= 1 && p.top_k <= p.num_experts, InvalidArgument, op, ": top_k = ", p.top_k,
            ", expected in [1, num_experts=", p.num_experts, "]");
  if (p.n_group > 1) {
    EPX_CHECK(p.n_group <= kMaxGroups && p.num_experts % p.n_group == 0 &&
                  p.num_experts / p.n_group >= 2,
              InvalidArgument, op, ": n_group = ", p.n_group, ", expected a divisor of num_experts=",
              p.num_experts, " with >= 2 experts per group and <= ", kMaxGroups, " groups");
    EPX_CHECK(p.topk_group >= 1 && p.topk_group <= p.n_group, InvalidArgument, op,
              ": topk_group = ", p.topk_group, ", expected in [1, n_group=", p.n_group, "]");
    EPX_CHECK_LE(p.top_k, p.topk_group * (p.num_experts / p.n_group), InvalidArgument, op,
                 ": top_k exceeds the experts of the kept groups");
  }
}

}  // namespace

void router_forward(std::int64_t* topk_idx, float* topk_weights, float* scores,
                    const float* logits, const float* bias, std::int64_t n,
                    const RouterParams& p) {
  check_params(p, "router_forward");
  const std::int64_t E = p.num_experts;
  const int K = p.top_k;
  const bool grouped = p.n_group > 1;
  const std::int64_t group_size = grouped ? E / p.n_group : E;
  const float neg_inf = -std::numeric_limits<float>::infinity();
  float group_score[kMaxGroups];
  for (std::int64_t r = 0; r < n; ++r) {
    const float* l = logits + r * E;
    float* s = scores + r * E;
    if (p.softmax) {
      softmax(l, s, E);
    } else {
      for (std::int64_t j = 0; j < E; ++j) s[j] = 1.0f / (1.0f + expf(-l[j]));
    }
    auto biased = [&](std::int64_t j) { return bias ? s[j] + bias[j] : s[j]; };

    std::uint64_t kept = ~std::uint64_t{0};
    if (grouped) {
      for (int g = 0; g < p.n_group; ++g) {
        float top1 = neg_inf, top2 = neg_inf;
        for (std::int64_t j = g * group_size; j < (g + 1) * group_size; ++j) {
          const float v = biased(j);
          if (v > top1) {
            top2 = top1;
            top1 = v;
          } else if (v > top2) {
            top2 = v;
          }
        }
        group_score[g] = top1 + top2;
      }
      kept = 0;
      Pick prev{0.0f, -1};
      for (int t = 0; t < p.topk_group; ++t) {
        Pick best{0.0f, -1};
        for (int g = 0; g < p.n_group; ++g) {
          if (prev.index >= 0 && !before(prev.value, prev.index, group_score[g], g)) continue;
          if (best.index < 0 || before(group_score[g], g, best.value, best.index))
            best = {group_score[g], g};
        }
        kept |= std::uint64_t{1} << best.index;
        prev = best;
      }
    }

    std::int64_t* idx = topk_idx + r * K;
    Pick prev{0.0f, -1};
    for (int t = 0; t < K; ++t) {
      Pick best{0.0f, -1};
      for (std::int64_t j = 0; j < E; ++j) {
        if (grouped && !((kept >> (j / group_size)) & 1)) continue;
        const float v = biased(j);
        if (prev.index >= 0 && !before(prev.value, prev.index, v, j)) continue;
        if (best.index < 0 || before(v, j, best.value, best.index)) best = {v, j};
      }
      EPX_CHECK(best.index >= 0, InvalidArgument, "router_forward: row ", r,
                " has fewer than top_k=", K, " ordered scores (NaN in the logits?)");
      idx[t] = best.index;
      prev = best;
    }

    float* wts = topk_weights + r * K;
    float total = 0.0f;
    for (int t = 0; t < K; ++t) total += s[idx[t]];
    for (int t = 0; t < K; ++t) wts[t] = s[idx[t]] / total * p.routed_scaling_factor;
  }
}

// w_k = f s_k / S with S = sum_m s_m over the chosen: ds_k = f (dw_k - sum_m dw_m s_m / S) / S;
// then through the score function (sigmoid: s (1 - s); softmax: s (ds - sum_j ds_j s_j)).
void router_backward(float* dlogits, const float* dweights, const float* scores,
                     const std::int64_t* topk_idx, std::int64_t n, const RouterParams& p) {
  check_params(p, "router_backward");
  const std::int64_t E = p.num_experts;
  const int K = p.top_k;
  for (std::int64_t r = 0; r < n; ++r) {
    const float* s = scores + r * E;
    const float* dw = dweights + r * K;
    const std::int64_t* idx = topk_idx + r * K;
    float* dl = dlogits + r * E;
    float total = 0.0f;
    for (int t = 0; t < K; ++t) total += s[idx[t]];
    float dot = 0.0f;  // sum_m dw_m s_m / S
    for (int t = 0; t < K; ++t) dot += dw[t] * s[idx[t]];
    dot = dot / total;
    const float f = p.routed_scaling_factor / total;
    for (std::int64_t j = 0; j < E; ++j) dl[j] = 0.0f;
    for (int t = 0; t < K; ++t) dl[idx[t]] = f * (dw[t] - dot);  // ds, distinct indices
    if (p.softmax) {
      float sd = 0.0f;
      for (int t = 0; t < K; ++t) sd += dl[idx[t]] * s[idx[t]];
      for (std::int64_t j = 0; j < E; ++j) dl[j] = s[j] * (dl[j] - sd);
    } else {
      for (int t = 0; t < K; ++t) {
        const std::int64_t j = idx[t];
        dl[j] = dl[j] * s[j] * (1.0f - s[j]);
      }
    }
  }
}

}  // namespace epx::kernels
