#include "tests/support/combine_reference.hpp"

#include <algorithm>
#include <vector>

#include "tests/support/rounding.hpp"

namespace epx::test {

namespace {

// dest[d] = 1 when rank d holds at least one of token t's experts.
void destinations(const Tensor& topk_idx, std::int64_t t, int per_rank, std::vector<char>& dest) {
  std::fill(dest.begin(), dest.end(), 0);
  const std::int64_t k = topk_idx.dim(1);
  const std::int64_t* idx = topk_idx.data<std::int64_t>() + t * k;
  for (std::int64_t j = 0; j < k; ++j)
    if (idx[j] >= 0) dest[static_cast<std::size_t>(idx[j] / per_rank)] = 1;
}

}  // namespace

Tensor expected_combine(const Topology& topology, int me, const InputsOf& inputs,
                        const ExpertRows& y, const CombineReference& options) {
  const int ranks = topology.ranks(), per_rank = topology.experts_per_rank();
  std::vector<char> dest(static_cast<std::size_t>(ranks));
  // On rank d, token t of `me` sits after every row that the ranks below `me`
  // sent to d, and after the earlier tokens of `me` sent to d.
  std::vector<std::int64_t> next_row(static_cast<std::size_t>(ranks), 0);
  for (int src = 0; src < me; ++src) {
    const Tensor idx = inputs(src).topk_idx;
    for (std::int64_t t = 0; t < idx.dim(0); ++t) {
      destinations(idx, t, per_rank, dest);
      for (int d = 0; d < ranks; ++d)
        next_row[static_cast<std::size_t>(d)] += dest[static_cast<std::size_t>(d)];
    }
  }

  const RankInputs own = inputs(me);
  const std::int64_t T = own.x.dim(0), H = own.x.dim(1);
  const int nodes = topology.num_nodes(), my_node = topology.node_of[static_cast<std::size_t>(me)];
  Tensor sum = Tensor::zeros({T, H}, DType::f32);
  std::vector<float> row(static_cast<std::size_t>(H));
  std::vector<float> node_sum(static_cast<std::size_t>(nodes * H));
  std::vector<char> node_hit(static_cast<std::size_t>(nodes));
  for (std::int64_t t = 0; t < T; ++t) {
    std::fill(node_sum.begin(), node_sum.end(), 0.0f);
    std::fill(node_hit.begin(), node_hit.end(), 0);
    destinations(own.topk_idx, t, per_rank, dest);
    for (int d = 0; d < ranks; ++d) {
      if (!dest[static_cast<std::size_t>(d)]) continue;
      y(d, next_row[static_cast<std::size_t>(d)]++, t, row.data());
      const int n = topology.node_of[static_cast<std::size_t>(d)];
      node_hit[static_cast<std::size_t>(n)] = 1;
      float* part = node_sum.data() + n * H;
      for (std::int64_t h = 0; h < H; ++h) part[h] += row[static_cast<std::size_t>(h)];
    }
    float* out = sum.data<float>() + t * H;
    for (int n = 0; n < nodes; ++n) {
      if (!node_hit[static_cast<std::size_t>(n)]) continue;
      float* part = node_sum.data() + n * H;
      if (options.partials_in_input_dtype && n != my_node) round_in_place(part, H, options.ydtype);
      for (std::int64_t h = 0; h < H; ++h) out[h] += part[h];
    }
  }
  return round_to(sum, options.ydtype);
}

}  // namespace epx::test
