#include "benchmarks/reference.hpp"

#include <cstring>
#include <epx/kernels.hpp>
#include <tuple>

#include "benchmarks/combine_input.hpp"
#include "kernels/float_convert.hpp"

namespace epx::bench {

namespace {

// dest[d] = 1 when rank d holds at least one of token t's experts.
void destinations(const Tensor& topk_idx, std::int64_t t, int per_rank, std::vector<char>& dest) {
  std::fill(dest.begin(), dest.end(), 0);
  const std::int64_t k = topk_idx.dim(1);
  const std::int64_t* idx = topk_idx.data<std::int64_t>() + t * k;
  for (std::int64_t j = 0; j < k; ++j) {
    if (idx[j] >= 0) dest[idx[j] / per_rank] = 1;
  }
}

void append(std::vector<std::byte>& to, const void* src, std::size_t bytes) {
  const auto* p = static_cast<const std::byte*>(src);
  to.insert(to.end(), p, p + bytes);
}

Tensor tensor_from(const std::vector<std::byte>& bytes, std::int64_t rows, std::int64_t cols,
                   DType dtype) {
  Tensor t = Tensor::empty({rows, cols}, dtype);
  if (!bytes.empty()) std::memcpy(t.raw(), bytes.data(), bytes.size());
  return t;
}

}  // namespace

SourceRows source_rows(const WorkloadSpec& spec, int rank, const BaselineOptions& options) {
  SourceRows r;
  r.input = make_workload(spec, rank);
  r.payload = r.input.x;
  if (options.fp8)
    std::tie(r.payload, r.scales) = kernels::per_token_cast_to_fp8(r.input.x, options.ue8m0);
  return r;
}

Expected compute_expected(const WorkloadSpec& spec, int rank, int ranks,
                          const BaselineOptions& options) {
  const int per_rank = spec.experts / ranks;
  const std::int64_t first = static_cast<std::int64_t>(rank) * per_rank;
  const std::int64_t k = spec.topk;
  const std::int64_t h = spec.hidden;
  Expected out;
  out.num_recv_tokens_per_expert.assign(per_rank, 0);
  std::vector<std::byte> xs, scales, ids, weights;
  // sent[s][d]: tokens rank s sends to rank d (for the combine row positions).
  std::vector<std::vector<std::int64_t>> sent(ranks, std::vector<std::int64_t>(ranks, 0));
  std::vector<char> dest(ranks);
  SourceRows own;

  // Dispatch: walk every source rank's tokens in order and keep the ones that
  // have an expert here, which is the required order of the received rows.
  for (int s = 0; s < ranks; ++s) {
    SourceRows src = source_rows(spec, s, options);
    const Workload& w = src.input;
    const Tensor& payload = src.payload;
    const Tensor& sc = src.scales;
    const std::size_t x_bytes = static_cast<std::size_t>(h) * dtype_size(payload.dtype());
    const std::size_t s_bytes =
        options.fp8 ? static_cast<std::size_t>(sc.dim(1)) * sizeof(float) : 0;
    const auto* px = static_cast<const std::byte*>(payload.raw());
    const auto* ps = options.fp8 ? static_cast<const std::byte*>(sc.raw()) : nullptr;
    const std::int64_t* idx = w.topk_idx.data<std::int64_t>();
    const float* wt = w.topk_weights.data<float>();
    for (std::int64_t t = 0; t < spec.tokens; ++t) {
      destinations(w.topk_idx, t, per_rank, dest);
      for (int d = 0; d < ranks; ++d) sent[s][d] += dest[d];
      if (!dest[rank]) continue;
      append(xs, px + t * x_bytes, x_bytes);
      if (options.fp8) append(scales, ps + t * s_bytes, s_bytes);
      for (std::int64_t j = 0; j < k; ++j) {
        const std::int64_t e = idx[t * k + j];
        const bool local = e >= first && e < first + per_rank;
        const std::int64_t id = local ? e - first : -1;
        const float weight = local ? wt[t * k + j] : 0.0f;
        if (local) ++out.num_recv_tokens_per_expert[id];
        append(ids, &id, sizeof(id));
        append(weights, &weight, sizeof(weight));
      }
      out.origin.push_back({s, t});
    }
    if (s == rank) own = std::move(src);
  }
  const std::int64_t m = static_cast<std::int64_t>(out.origin.size());
  out.x = tensor_from(xs, m, h, options.fp8 ? DType::e4m3 : DType::bf16);
  if (options.fp8) out.x_scales = tensor_from(scales, m, h / 128, DType::f32);
  out.topk_idx = tensor_from(ids, m, k, DType::i64);
  out.topk_weights = tensor_from(weights, m, k, DType::f32);

  // Combine: on rank d, this rank's token t sits after every row that ranks
  // below this one sent to d, and after this rank's earlier tokens sent to d.
  std::vector<std::int64_t> next_row(ranks, 0);
  for (int d = 0; d < ranks; ++d) {
    for (int s = 0; s < rank; ++s) next_row[d] += sent[s][d];
  }
  out.combined = Tensor::empty({spec.tokens, h}, DType::bf16);
  std::vector<std::uint16_t> y(h);
  std::vector<float> acc(h);
  for (std::int64_t t = 0; t < spec.tokens; ++t) {
    std::fill(acc.begin(), acc.end(), 0.0f);
    destinations(own.input.topk_idx, t, per_rank, dest);
    for (int d = 0; d < ranks; ++d) {
      if (!dest[d]) continue;
      make_y_row(own.payload, own.scales, t, combine_factor(d, next_row[d]++), y.data());
      for (std::int64_t i = 0; i < h; ++i) acc[i] += kernels::bf16_to_float(y[i]);
    }
    std::uint16_t* row = out.combined.data<std::uint16_t>() + t * h;
    for (std::int64_t i = 0; i < h; ++i) row[i] = kernels::float_to_bf16(acc[i]);
  }
  return out;
}

}  // namespace epx::bench
