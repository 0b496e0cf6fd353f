// Embedding -> layers (attention over the KV cache, then a dense or MoE FFN)
// -> final RMSNorm and LM head at the positions that want logits.
#include "serve/forward.hpp"

#include <cmath>
#include <cstring>

#include <epx/model_kernels.hpp>

#include "core/check.hpp"

namespace epx::serve {

Forward::Forward(model::Model& model, comm::Buffer& buffer, KvCache& cache, bool deterministic,
                 bool fp8_dispatch)
    : model_(model),
      buffer_(buffer),
      cache_(cache),
      deterministic_(deterministic),
      fp8_dispatch_(fp8_dispatch) {
  EPX_CHECK_EQ(buffer.group().size(), model.ep_size(), InvalidArgument,
               "serve::Forward: the Buffer's group must be the EP group");
  EPX_CHECK(!fp8_dispatch || model.config().hidden_size % 128 == 0, InvalidArgument,
            "serve::Forward: fp8 dispatch needs model.hidden_size a multiple of 128, got ",
            model.config().hidden_size);
  counts_.assign(static_cast<std::size_t>(model.num_moe_layers()) * model.config().num_experts, 0);
}

std::vector<std::int64_t> Forward::take_expert_counts() {
  std::vector<std::int64_t> c(counts_.size(), 0);
  c.swap(counts_);
  return c;
}

void Forward::set_placement(const balancer::Placement* placement, int num_nodes) {
  placement_ = placement;
  placement_nodes_ = num_nodes;
}

void Forward::linear(float* y, const float* x, const float* w, std::int64_t n, std::int64_t in,
                     std::int64_t out, bool accumulate) const {
  if (!by_row_) return kernels::linear_forward(y, x, w, n, in, out, accumulate);
  for (std::int64_t t = 0; t < n; ++t)
    kernels::linear_forward_row(y + t * out, x + t * in, w, in, out, accumulate);
}

void Forward::mlp(float* y, std::vector<float>& scratch, const float* x, std::int64_t n,
                  const kernels::MlpWeights& w, bool accumulate) const {
  if (n == 0) return;
  float* saved = detail::at_least(scratch, (by_row_ ? 1 : n) * 3 * w.inter);
  if (!by_row_) return kernels::mlp_forward(y, saved, x, n, w, accumulate);
  for (std::int64_t t = 0; t < n; ++t)
    kernels::mlp_forward_row(y + t * w.hidden, saved, x + t * w.hidden, w, accumulate);
}

void Forward::load(Rows& r, const std::vector<Segment>& segs, std::size_t first, std::size_t last) {
  const std::int64_t V = model_.config().vocab_size;
  r.T = 0;
  for (std::size_t i = first; i < last; ++i) r.T += segs[i].count;
  const auto n = static_cast<std::size_t>(r.T);
  r.seq.resize(n);
  r.pos.resize(n);
  r.positions.resize(n);
  r.tokens.resize(n);
  r.seg_first.clear();
  r.seg_count.clear();
  std::int64_t t = 0;
  for (std::size_t si = first; si < last; ++si) {
    const Segment& s = segs[si];
    r.seg_first.push_back(t);
    r.seg_count.push_back(s.count);
    EPX_CHECK(s.start + s.count <= cache_.capacity(s.seq), Internal, "serve::Forward: sequence ",
              s.seq, " positions [", s.start, ", ", s.start + s.count, ") past its cache capacity ",
              cache_.capacity(s.seq));
    for (std::int64_t i = 0; i < s.count; ++i, ++t) {
      EPX_CHECK(s.tokens[i] >= 0 && s.tokens[i] < V, Internal, "serve::Forward: token ",
                s.tokens[i], " outside the vocabulary of ", V);
      r.tokens[t] = s.tokens[i];
      r.seq[t] = s.seq;
      r.pos[t] = s.start + i;
      r.positions[t] = static_cast<std::int32_t>(s.start + i);
    }
  }
  const std::int64_t H = model_.config().hidden_size;
  kernels::embedding_forward(detail::at_least(r.h, r.T * H), model_.dense.value(model_.embed),
                             r.tokens.data(), r.T, H);
}

void Forward::run(const std::vector<Segment>& segs, std::vector<float>& logits, bool low_latency,
                  bool overlap, std::int64_t step_rows) {
  low_latency_ = low_latency;
  by_row_ = deterministic_ || step_rows == 1;
  const model::ModelConfig& c = model_.config();
  model::ParamStore& P = model_.dense;
  const std::int64_t H = c.hidden_size, V = c.vocab_size;
  const bool two = low_latency && overlap;
  const std::size_t half = two ? (segs.size() + 1) / 2 : segs.size();
  load(rows_[0], segs, 0, half);
  load(rows_[1], segs, half, segs.size());
  if (two) {
    layers_overlapped();
  } else {
    for (int l = 0; l < c.num_layers; ++l) {
      attention(rows_[0], l);
      if (model_.layers[l].moe) {
        moe(rows_[0], l);
      } else {
        dense_ffn(rows_[0], l);
      }
    }
  }

  // The head, only at the last position of each segment that wants logits.
  std::vector<float> last;
  std::int64_t t = 0;
  for (std::size_t i = 0; i < segs.size(); ++i) {
    const Segment& s = segs[i];
    if (i == half) t = 0;
    t += s.count;
    const std::vector<float>& h = rows_[i < half ? 0 : 1].h;
    if (s.want_logits && s.count > 0)
      last.insert(last.end(), h.begin() + (t - 1) * H, h.begin() + t * H);
  }
  const std::int64_t n = static_cast<std::int64_t>(last.size()) / H;
  std::vector<float> xn(last.size()), rstd(static_cast<std::size_t>(n));
  kernels::rmsnorm_forward(xn.data(), rstd.data(), last.data(), P.value(model_.final_norm), n, H,
                           static_cast<float>(c.rms_norm_eps));
  logits.resize(static_cast<std::size_t>(n * V));
  linear(logits.data(), xn.data(), P.value(model_.lm_head), n, H, V, false);
}

void Forward::layers_overlapped() {
  const model::ModelConfig& c = model_.config();
  InFlight f[2];
  for (int l = 0; l < c.num_layers; ++l) {
    if (!model_.layers[l].moe) {
      for (Rows& r : rows_) {
        attention(r, l);
        dense_ffn(r, l);
      }
      continue;
    }
    // Micro-batch 1's attention runs while 0's dispatch is in flight, 1's
    // experts while 0's combine is, 0's shared experts while 1's combine is.
    for (int b = 0; b < 2; ++b) {
      attention(rows_[b], l);
      route(rows_[b], l);
      ll_dispatch(rows_[b], f[b], true);
    }
    for (int b = 0; b < 2; ++b) ll_experts_combine(rows_[b], l, f[b], true);
    for (int b = 0; b < 2; ++b) {
      ll_receive(rows_[b], f[b]);
      shared_and_add(rows_[b], l);
    }
  }
}

// h += o_proj(attention(RoPE(q), cached RoPE(k), cached v)): each row at
// position p attends to positions 0..p of its sequence; this step's keys and
// values go into the cache first, so a chunk's rows see each other.
void Forward::attention(Rows& r, int layer) {
  const model::ModelConfig& c = model_.config();
  const model::LayerIndex& li = model_.layers[layer];
  model::ParamStore& P = model_.dense;
  const std::int64_t T = r.T, H = c.hidden_size, nh = c.num_heads, hd = c.head_dim();
  const float theta = static_cast<float>(c.rope_theta);
  float* xn = detail::at_least(r.xn, T * H);
  kernels::rmsnorm_forward(xn, detail::at_least(r.rstd, T), r.h.data(), P.value(li.attn_norm), T, H,
                           static_cast<float>(c.rms_norm_eps));
  float* q = detail::at_least(r.q, T * H);
  float* k = detail::at_least(r.k, T * H);
  float* v = detail::at_least(r.v, T * H);
  linear(q, xn, P.value(li.q), T, H, H, false);
  linear(k, xn, P.value(li.k), T, H, H, false);
  linear(v, xn, P.value(li.v), T, H, H, false);
  kernels::rope_forward(q, r.positions.data(), T, nh, hd, theta);
  kernels::rope_forward(k, r.positions.data(), T, nh, hd, theta);
  for (std::int64_t t = 0; t < T; ++t) {
    std::memcpy(cache_.key(r.seq[t], layer, r.pos[t]), k + t * H, sizeof(float) * H);
    std::memcpy(cache_.value(r.seq[t], layer, r.pos[t]), v + t * H, sizeof(float) * H);
  }
  // Per segment: a prefill chunk of 2 or more rows GEMM-shaped, unless
  // deterministic; a decode token (and every row with deterministic) in the
  // scalar loop (serve/attention.hpp).
  float* a = detail::at_least(r.a, T * H);
  for (std::size_t si = 0; si < r.seg_first.size(); ++si) {
    const std::int64_t t0 = r.seg_first[si], count = r.seg_count[si];
    if (count == 0) continue;
    const SegmentAttention sa{r.seq[t0], layer, r.pos[t0], count, nh, hd, q + t0 * H, a + t0 * H};
    if (!deterministic_ && count > 1) {
      attention_gemm(cache_, sa, attn_);
    } else {
      attention_scalar(cache_, sa, attn_);
    }
  }
  linear(r.h.data(), a, P.value(li.o), T, H, H, /*accumulate=*/true);
}

void Forward::dense_ffn(Rows& r, int layer) {
  const model::ModelConfig& c = model_.config();
  const model::LayerIndex& li = model_.layers[layer];
  model::ParamStore& P = model_.dense;
  const std::int64_t T = r.T, H = c.hidden_size, I = c.intermediate_size;
  float* xn = detail::at_least(r.xn, T * H);
  kernels::rmsnorm_forward(xn, detail::at_least(r.rstd, T), r.h.data(), P.value(li.ffn_norm), T, H,
                           static_cast<float>(c.rms_norm_eps));
  const kernels::MlpWeights w{P.value(li.mlp_gate), P.value(li.mlp_up), P.value(li.mlp_down), H, I};
  mlp(r.h.data(), r.mlp, xn, T, w, true);
}

}  // namespace epx::serve
