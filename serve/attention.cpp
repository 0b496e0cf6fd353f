#include "serve/attention.hpp"

#include <algorithm>
#include <cmath>

#include "core/check.hpp"
#include "kernels/gemm.hpp"
#include "kernels/softmax.hpp"

namespace epx::serve {

namespace {

float* at_least(std::vector<float>& v, std::int64_t n) {
  if (static_cast<std::int64_t>(v.size()) < n) v.resize(static_cast<std::size_t>(n));
  return v.data();
}

void check(KvCache& cache, const SegmentAttention& a, const char* what) {
  EPX_CHECK(a.heads > 0 && a.head_dim > 0 && a.heads * a.head_dim == cache.hidden(),
            InvalidArgument, what, ": heads ", a.heads, " x head_dim ", a.head_dim,
            ", expected > 0 with a product of the cache's hidden size ", cache.hidden());
  EPX_CHECK(a.layer >= 0 && a.layer < cache.layers(), InvalidArgument, what, ": layer ", a.layer,
            ", expected in [0, ", cache.layers(), ")");
  EPX_CHECK(a.start >= 0 && a.rows >= 0, InvalidArgument, what, ": start ", a.start, ", rows ",
            a.rows, ", expected >= 0");
  EPX_CHECK(a.start + a.rows <= cache.capacity(a.seq), InvalidArgument, what, ": positions [",
            a.start, ", ", a.start + a.rows, ") of sequence ", a.seq, " past its cache capacity ",
            cache.capacity(a.seq));
  EPX_CHECK(a.rows == 0 || (a.q != nullptr && a.out != nullptr), InvalidArgument, what,
            ": q or out is null for ", a.rows, " rows");
}

// Rows per tile of the GEMM path: a tile's scores span the context up to its
// last row only, so the masked (upper) part computed and thrown away is at
// most a tile's width per row, not the chunk's.
constexpr std::int64_t kRowTile = 64;

}  // namespace

void attention_scalar(KvCache& cache, const SegmentAttention& a, AttentionScratch& s) {
  check(cache, a, "serve::attention_scalar");
  const std::int64_t H = a.heads * a.head_dim, hd = a.head_dim;
  const float scale = 1.0f / sqrtf(static_cast<float>(hd));
  for (std::int64_t t = 0; t < a.rows; ++t) {
    const std::int64_t pos = a.start + t;
    float* p = at_least(s.scores, pos + 1);
    for (std::int64_t hh = 0; hh < a.heads; ++hh) {
      const float* qh = a.q + t * H + hh * hd;
      for (std::int64_t j = 0; j <= pos; ++j) {
        const float* kj = cache.key(a.seq, a.layer, j) + hh * hd;
        float dot = 0.0f;
        for (std::int64_t d = 0; d < hd; ++d) dot += qh[d] * kj[d];
        p[j] = dot * scale;
      }
      const float sum = kernels::exp_minus_max(p, p, pos + 1);
      float* out = a.out + t * H + hh * hd;
      std::fill(out, out + hd, 0.0f);
      for (std::int64_t j = 0; j <= pos; ++j) {
        const float pj = p[j] / sum;
        const float* vj = cache.value(a.seq, a.layer, j) + hh * hd;
        for (std::int64_t d = 0; d < hd; ++d) out[d] += pj * vj[d];
      }
    }
  }
}

void attention_gemm(KvCache& cache, const SegmentAttention& a, AttentionScratch& s) {
  check(cache, a, "serve::attention_gemm");
  if (a.rows == 0) return;
  const std::int64_t H = a.heads * a.head_dim, hd = a.head_dim;
  const std::int64_t ctx = a.start + a.rows;
  const float scale = 1.0f / sqrtf(static_cast<float>(hd));
  float* keys = at_least(s.keys, ctx * H);
  float* values = at_least(s.values, ctx * H);
  cache.gather(a.seq, a.layer, ctx, keys, values);
  float* scores = at_least(s.scores, std::min(kRowTile, a.rows) * ctx);
  for (std::int64_t hh = 0; hh < a.heads; ++hh) {
    for (std::int64_t i0 = 0; i0 < a.rows; i0 += kRowTile) {
      const std::int64_t m = std::min(kRowTile, a.rows - i0);
      const std::int64_t n = a.start + i0 + m;  // the tile's context: its last row's
      // S [m, n] = scale q_tile K^T, on the [rows, H] layouts (lda = H).
      kernels::sgemm(false, true, m, n, hd, scale, a.q + i0 * H + hh * hd, H, keys + hh * hd, H,
                     0.0f, scores, n);
      for (std::int64_t i = 0; i < m; ++i) {
        float* p = scores + i * n;
        const std::int64_t last = a.start + i0 + i;  // row i sees positions 0..last
        kernels::softmax(p, p, last + 1);
        std::fill(p + last + 1, p + n, 0.0f);
      }
      // O_tile [m, hd] = P V, written into the head's columns of out.
      kernels::sgemm(false, false, m, hd, n, 1.0f, scores, n, values + hh * hd, H, 0.0f,
                     a.out + i0 * H + hh * hd, H);
    }
  }
}

}  // namespace epx::serve
