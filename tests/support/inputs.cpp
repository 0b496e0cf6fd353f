#include "tests/support/inputs.hpp"

#include <algorithm>
#include <epx/group.hpp>
#include <epx/kernels.hpp>
#include <tuple>

namespace epx::test {

int Topology::num_nodes() const {
  return node_of.empty() ? 0 : *std::max_element(node_of.begin(), node_of.end()) + 1;
}

Topology Topology::flat(int ranks, int experts) {
  return Topology{std::vector<int>(static_cast<std::size_t>(ranks), 0), experts};
}

Topology Topology::of(const Group& group, int experts) {
  Topology t{std::vector<int>(static_cast<std::size_t>(group.size())), experts};
  for (int r = 0; r < group.size(); ++r) t.node_of[static_cast<std::size_t>(r)] = group.node_of(r);
  return t;
}

Payload payload_of(const Tensor& x, const PayloadFormat& format) {
  Payload p{x, Tensor()};
  // An empty rank has nothing to cast (and may hand in tensors without storage).
  if (format.fp8 && x.dim(0) > 0)
    std::tie(p.x, p.scales) = kernels::per_token_cast_to_fp8(x, format.ue8m0);
  if (format.fp8 && x.dim(0) == 0) {
    p.x = Tensor::empty({0, x.dim(1)}, DType::e4m3);
    p.scales = Tensor::empty({0, x.dim(1) / 128}, DType::f32);
  }
  return p;
}

}  // namespace epx::test
