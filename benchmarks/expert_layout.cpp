#include "benchmarks/expert_layout.hpp"

#include <algorithm>
#include <cstring>

#include "kernels/float_convert.hpp"

namespace epx::bench {

ExpertLayout::ExpertLayout(int local_experts, std::int64_t slots, std::int64_t hidden)
    : local_experts_(local_experts), slots_(slots), hidden_(hidden) {}

void ExpertLayout::permute(const Tensor& x, const Tensor& x_scales, const Tensor& topk_idx) {
  const std::int64_t M = x.dim(0), K = topk_idx.dim(1);
  const std::size_t row = static_cast<std::size_t>(hidden_) * dtype_size(x.dtype());
  const std::size_t S = x_scales.defined() ? static_cast<std::size_t>(x_scales.dim(1)) : 0;
  const std::size_t total = static_cast<std::size_t>(local_experts_ * slots_);
  if (rows_.size() < total * row) rows_.resize(total * row);
  if (scales_.size() < total * S) scales_.resize(total * S);
  count_.assign(static_cast<std::size_t>(local_experts_), 0);
  slot_.assign(static_cast<std::size_t>(M * K), -1);
  const auto* src = static_cast<const std::uint8_t*>(x.raw());
  const std::int64_t* idx = topk_idx.data<std::int64_t>();
  for (std::int64_t m = 0; m < M; ++m) {
    for (std::int64_t k = 0; k < K; ++k) {
      const std::int64_t e = idx[m * K + k];
      if (e < 0) continue;
      const std::int64_t s = count_[static_cast<std::size_t>(e)]++;
      const std::size_t at = static_cast<std::size_t>(e * slots_ + s);
      std::memcpy(rows_.data() + at * row, src + static_cast<std::size_t>(m) * row, row);
      if (S) std::memcpy(scales_.data() + at * S, x_scales.data<float>() + m * S, S * sizeof(float));
      slot_[static_cast<std::size_t>(m * K + k)] = static_cast<std::int64_t>(at);
    }
  }
}

void ExpertLayout::reduce(const Tensor& expert_out, const Tensor& topk_weights, Tensor& out) const {
  const std::int64_t M = out.dim(0), K = topk_weights.dim(1), H = hidden_;
  const auto* y = expert_out.data<std::uint16_t>();
  const float* w = topk_weights.data<float>();
  auto* o = out.data<std::uint16_t>();
  std::vector<float> acc(static_cast<std::size_t>(H));
  for (std::int64_t m = 0; m < M; ++m) {
    std::fill(acc.begin(), acc.end(), 0.0f);
    for (std::int64_t k = 0; k < K; ++k) {
      const std::int64_t at = slot_[static_cast<std::size_t>(m * K + k)];
      if (at < 0) continue;
      const std::uint16_t* r = y + at * H;
      const float wk = w[m * K + k];
      for (std::int64_t h = 0; h < H; ++h) acc[h] = acc[h] + wk * kernels::bf16_to_float(r[h]);
    }
    for (std::int64_t h = 0; h < H; ++h) o[m * H + h] = kernels::float_to_bf16(acc[h]);
  }
}

}  // namespace epx::bench
