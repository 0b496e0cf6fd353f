#include "tests/support/dispatch_reference.hpp"

#include <cstring>

namespace epx::test {

namespace {

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

ExpectedDispatch expected_dispatch(const Topology& topology, int me, const InputsOf& inputs,
                                   const PayloadFormat& format, int alignment) {
  const int per_rank = topology.experts_per_rank();
  const std::int64_t first = static_cast<std::int64_t>(me) * per_rank;
  ExpectedDispatch out;
  out.num_recv_tokens_per_expert.assign(static_cast<std::size_t>(per_rank), 0);
  std::vector<std::byte> xs, scales, ids, weights;
  std::int64_t hidden = 0, k = 0;
  DType dtype = DType::bf16;

  // Walk every source rank's tokens in order and keep the ones that have an
  // expert here, which is the required order of the received rows.
  for (int src = 0; src < topology.ranks(); ++src) {
    const RankInputs in = inputs(src);
    const Payload p = payload_of(in.x, format);
    hidden = in.x.dim(1);
    k = in.topk_idx.dim(1);
    dtype = p.x.dtype();
    const std::size_t x_bytes = static_cast<std::size_t>(hidden) * dtype_size(dtype);
    const std::size_t s_bytes =
        format.fp8 ? static_cast<std::size_t>(hidden / 128) * sizeof(float) : 0;
    const std::int64_t* idx = in.topk_idx.data<std::int64_t>();
    const float* wt = in.topk_weights.data<float>();
    for (std::int64_t t = 0; t < in.x.dim(0); ++t) {
      bool here = false;
      for (std::int64_t j = 0; j < k; ++j)
        here |= idx[t * k + j] >= first && idx[t * k + j] < first + per_rank;
      if (!here) continue;
      append(xs, static_cast<const std::byte*>(p.x.raw()) + t * x_bytes, x_bytes);
      if (format.fp8)
        append(scales, static_cast<const std::byte*>(p.scales.raw()) + t * s_bytes, s_bytes);
      for (std::int64_t j = 0; j < k; ++j) {
        const std::int64_t e = idx[t * k + j];
        const bool local = e >= first && e < first + per_rank;
        const std::int64_t id = local ? e - first : -1;
        const float weight = local ? wt[t * k + j] : 0.0f;
        if (local) ++out.num_recv_tokens_per_expert[static_cast<std::size_t>(id)];
        append(ids, &id, sizeof(id));
        append(weights, &weight, sizeof(weight));
      }
      out.origin.push_back({src, t});
    }
  }
  const std::int64_t m = out.rows();
  out.x = tensor_from(xs, m, hidden, dtype);
  if (format.fp8) out.x_scales = tensor_from(scales, m, hidden / 128, DType::f32);
  out.topk_idx = tensor_from(ids, m, k, DType::i64);
  out.topk_weights = tensor_from(weights, m, k, DType::f32);
  for (int& c : out.num_recv_tokens_per_expert) c = (c + alignment - 1) / alignment * alignment;
  return out;
}

}  // namespace epx::test
