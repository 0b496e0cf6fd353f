#include "benchmarks/low_latency_reference.hpp"

#include <cstring>

#include "benchmarks/combine_input.hpp"
#include "kernels/float_convert.hpp"

namespace epx::bench {

LowLatencyExpected compute_low_latency_expected(const WorkloadSpec& spec, int rank, int ranks,
                                                const BaselineOptions& options) {
  const int per_rank = spec.experts / ranks;
  const std::int64_t first = static_cast<std::int64_t>(rank) * per_rank;
  const std::int64_t k = spec.topk;
  const std::int64_t h = spec.hidden;
  const std::int64_t slots = static_cast<std::int64_t>(ranks) * spec.tokens;
  const DType x_dtype = options.fp8 ? DType::e4m3 : DType::bf16;
  const std::size_t x_bytes = static_cast<std::size_t>(h) * dtype_size(x_dtype);
  const std::int64_t num_scales = h / 128;
  const std::size_t s_bytes = options.fp8 ? num_scales * sizeof(float) : 0;

  LowLatencyExpected out;
  out.count.assign(per_rank, 0);
  out.origin.resize(per_rank);
  std::vector<std::vector<std::byte>> xs(per_rank), scales(per_rank);
  // before[g]: rows that ranks below this one put in expert g's list (the
  // position of this rank's first row there, for combine).
  std::vector<std::int64_t> before(static_cast<std::size_t>(spec.experts), 0);
  SourceRows own;

  for (int s = 0; s < ranks; ++s) {
    SourceRows src = source_rows(spec, s, options);
    const Workload& w = src.input;
    const Tensor& payload = src.payload;
    const Tensor& sc = src.scales;
    const auto* px = static_cast<const std::byte*>(payload.raw());
    const auto* ps = options.fp8 ? static_cast<const std::byte*>(sc.raw()) : nullptr;
    const std::int64_t* idx = w.topk_idx.data<std::int64_t>();
    for (std::int64_t t = 0; t < spec.tokens; ++t) {
      for (std::int64_t j = 0; j < k; ++j) {
        const std::int64_t g = idx[t * k + j];
        if (g < 0) continue;
        if (s < rank) ++before[static_cast<std::size_t>(g)];
        if (g < first || g >= first + per_rank) continue;
        const std::size_t e = static_cast<std::size_t>(g - first);
        xs[e].insert(xs[e].end(), px + t * x_bytes, px + (t + 1) * x_bytes);
        if (options.fp8)
          scales[e].insert(scales[e].end(), ps + t * s_bytes, ps + (t + 1) * s_bytes);
        out.origin[e].push_back({s, t});
        ++out.count[e];
      }
    }
    if (s == rank) own = std::move(src);
  }
  for (int e = 0; e < per_rank; ++e) {
    const std::int64_t n = out.count[e];
    out.x.push_back(Tensor::empty({n, h}, x_dtype));
    if (n) std::memcpy(out.x.back().raw(), xs[e].data(), xs[e].size());
    if (options.fp8) {
      out.x_scales.push_back(Tensor::empty({n, num_scales}, DType::f32));
      if (n) std::memcpy(out.x_scales.back().raw(), scales[e].data(), scales[e].size());
    }
  }

  // Combine: token t's entry for expert g (local expert e of rank d) is row
  // before[g] + (this rank's earlier tokens routed to g) of e's list on d, and
  // d made its y from the row it received, which is this rank's own payload.
  const int experts = spec.experts;
  std::vector<std::int64_t> next_row(before);
  const std::int64_t* idx = own.input.topk_idx.data<std::int64_t>();
  const float* weights = own.input.topk_weights.data<float>();
  out.combined = Tensor::empty({spec.tokens, h}, DType::bf16);
  std::vector<std::uint16_t> y(h);
  std::vector<float> acc(h);
  for (std::int64_t t = 0; t < spec.tokens; ++t) {
    std::fill(acc.begin(), acc.end(), 0.0f);
    for (std::int64_t j = 0; j < k; ++j) {
      const std::int64_t g = idx[t * k + j];
      if (g < 0 || g >= experts) continue;
      const int d = static_cast<int>(g / per_rank);
      const std::int64_t e = g % per_rank;
      const std::int64_t row = next_row[static_cast<std::size_t>(g)]++;
      make_y_row(own.payload, own.scales, t, combine_factor(d, e * slots + row), y.data());
      const float w = weights[t * k + j];
      for (std::int64_t i = 0; i < h; ++i) {
        const float product = w * kernels::bf16_to_float(y[i]);
        acc[i] = acc[i] + product;
      }
    }
    std::uint16_t* dst = out.combined.data<std::uint16_t>() + t * h;
    for (std::int64_t i = 0; i < h; ++i) dst[i] = kernels::float_to_bf16(acc[i]);
  }
  return out;
}

}  // namespace epx::bench
