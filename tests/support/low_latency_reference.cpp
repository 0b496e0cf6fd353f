#include "tests/support/low_latency_reference.hpp"

#include <cstring>

#include "tests/support/rounding.hpp"

namespace epx::test {

LowLatencyExpected expected_low_latency_dispatch(const Topology& topology, int me,
                                                 const InputsOf& inputs,
                                                 const PayloadFormat& format) {
  const int per_rank = topology.experts_per_rank();
  const std::int64_t first = static_cast<std::int64_t>(me) * per_rank;
  LowLatencyExpected out;
  out.count.assign(static_cast<std::size_t>(per_rank), 0);
  out.origin.resize(static_cast<std::size_t>(per_rank));
  std::vector<std::vector<std::byte>> xs(static_cast<std::size_t>(per_rank)), scales(xs.size());
  std::size_t x_bytes = 0, s_bytes = 0;
  for (int src = 0; src < topology.ranks(); ++src) {
    const RankInputs in = inputs(src);
    const Payload p = payload_of(in.x, format);
    out.dtype = p.x.dtype();
    out.hidden = in.x.dim(1);
    x_bytes = static_cast<std::size_t>(out.hidden) * dtype_size(out.dtype);
    s_bytes = format.fp8 ? static_cast<std::size_t>(out.hidden / 128) * sizeof(float) : 0;
    const auto* px = static_cast<const std::byte*>(p.x.raw());
    const auto* ps = format.fp8 ? static_cast<const std::byte*>(p.scales.raw()) : nullptr;
    const std::int64_t k = in.topk_idx.dim(1);
    const std::int64_t* idx = in.topk_idx.data<std::int64_t>();
    for (std::int64_t t = 0; t < in.x.dim(0); ++t) {
      for (std::int64_t j = 0; j < k; ++j) {
        const std::int64_t g = idx[t * k + j];
        if (g < first || g >= first + per_rank) continue;
        const std::size_t e = static_cast<std::size_t>(g - first);
        xs[e].insert(xs[e].end(), px + t * x_bytes, px + (t + 1) * x_bytes);
        if (format.fp8) scales[e].insert(scales[e].end(), ps + t * s_bytes, ps + (t + 1) * s_bytes);
        out.origin[e].push_back({src, t});
        ++out.count[e];
      }
    }
  }
  for (std::size_t e = 0; e < xs.size(); ++e) {
    const std::int64_t n = out.count[e];
    out.x.push_back(Tensor::empty({n, out.hidden}, out.dtype));
    if (n) std::memcpy(out.x.back().raw(), xs[e].data(), xs[e].size());
    if (format.fp8) {
      out.x_scales.push_back(Tensor::empty({n, out.hidden / 128}, DType::f32));
      if (n) std::memcpy(out.x_scales.back().raw(), scales[e].data(), scales[e].size());
    }
  }
  return out;
}

std::string compare_low_latency_dispatch(const std::string& what,
                                         const comm::LowLatencyDispatchResult& r,
                                         const LowLatencyExpected& ref, std::int64_t slots) {
  const std::int64_t local = static_cast<std::int64_t>(ref.count.size());
  const std::int64_t h = ref.hidden;
  const DType dtype = ref.dtype;
  const bool fp8 = dtype == DType::e4m3;
  const std::vector<std::int64_t> x_shape = {local, slots, h};
  if (!r.x.defined() || r.x.dtype() != dtype || r.x.shape() != x_shape)
    return what + " x: got " + (r.x.defined() ? r.x.describe() : std::string("nothing")) +
           ", expected " + dtype_name(dtype) + "[" + std::to_string(local) + "," +
           std::to_string(slots) + "," + std::to_string(h) + "]";
  if (fp8) {
    const std::vector<std::int64_t> s_shape = {local, slots, h / 128};
    if (!r.x_scales.defined() || r.x_scales.dtype() != DType::f32 || r.x_scales.shape() != s_shape)
      return what + " x_scales: got " +
             (r.x_scales.defined() ? r.x_scales.describe() : std::string("nothing")) +
             ", expected f32[" + std::to_string(local) + "," + std::to_string(slots) + "," +
             std::to_string(h / 128) + "]";
  } else if (r.x_scales.defined()) {
    return what + " x_scales: got " + r.x_scales.describe() + " without fp8, expected nothing";
  }
  if (!r.count.defined() || r.count.dtype() != DType::i32 ||
      r.count.shape() != std::vector<std::int64_t>{local})
    return what + " count: got " +
           (r.count.defined() ? r.count.describe() : std::string("nothing")) + ", expected i32[" +
           std::to_string(local) + "]";
  const std::int32_t* count = r.count.data<std::int32_t>();
  const std::string counts =
      compare_counts(what + " count", std::vector<int>(count, count + local), ref.count);
  if (!counts.empty()) return counts;

  // Rows 0..count[e]-1 of each expert, bit for bit; the rest is free space.
  auto* x = const_cast<unsigned char*>(static_cast<const unsigned char*>(r.x.raw()));
  const std::size_t x_expert = static_cast<std::size_t>(slots * h) * dtype_size(dtype);
  for (std::int64_t e = 0; e < local; ++e) {
    const std::int64_t n = ref.count[e];
    const std::string name = what + " x of local expert " + std::to_string(e);
    std::string err = compare_tensors(name, Tensor::wrap(x + e * x_expert, {n, h}, dtype), ref.x[e],
                                      &ref.origin[e]);
    if (err.empty() && fp8) {
      float* s = const_cast<float*>(r.x_scales.data<float>()) + e * slots * (h / 128);
      err = compare_tensors(what + " x_scales of local expert " + std::to_string(e),
                            Tensor::wrap(s, {n, h / 128}, DType::f32), ref.x_scales[e],
                            &ref.origin[e]);
    }
    if (!err.empty()) return err;
  }
  return "";
}

Tensor expected_low_latency_combine(const Topology& topology, int me, const InputsOf& inputs,
                                    const ExpertSlotRows& y, DType ydtype) {
  // before[g]: rows that the ranks below `me` put in expert g's list, where
  // the first row of `me` for g follows.
  std::vector<std::int64_t> next_row(static_cast<std::size_t>(topology.experts), 0);
  for (int src = 0; src < me; ++src) {
    const Tensor idx = inputs(src).topk_idx;
    const std::int64_t* p = idx.data<std::int64_t>();
    for (std::int64_t i = 0; i < idx.numel(); ++i)
      if (p[i] >= 0 && p[i] < topology.experts) ++next_row[static_cast<std::size_t>(p[i])];
  }
  const RankInputs own = inputs(me);
  const std::int64_t T = own.x.dim(0), H = own.x.dim(1), k = own.topk_idx.dim(1);
  const std::int64_t* idx = own.topk_idx.data<std::int64_t>();
  const float* weights = own.topk_weights.data<float>();
  Tensor out = Tensor::zeros({T, H}, DType::f32);
  std::vector<float> yk(static_cast<std::size_t>(H));
  for (std::int64_t t = 0; t < T; ++t) {
    float* acc = out.data<float>() + t * H;
    for (std::int64_t j = 0; j < k; ++j) {
      const std::int64_t g = idx[t * k + j];
      if (g < 0 || g >= topology.experts) continue;
      y(g, next_row[static_cast<std::size_t>(g)]++, t, yk.data());
      const float w = weights[t * k + j];
      for (std::int64_t h = 0; h < H; ++h) {
        const float product = w * yk[static_cast<std::size_t>(h)];  // no FMA: -ffp-contract=off
        acc[h] = acc[h] + product;
      }
    }
  }
  return round_to(out, ydtype);
}

}  // namespace epx::test
