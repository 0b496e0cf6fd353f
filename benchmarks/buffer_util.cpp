#include "benchmarks/buffer_util.hpp"

#include <cstring>
#include <set>

namespace epx::bench {

std::string transport_names(const comm::Buffer& buffer, int rank, int ranks) {
  std::set<std::string> names;
  for (int peer = 0; peer < ranks; ++peer) {
    if (peer != rank || ranks == 1) names.insert(buffer.transport_name(peer));
  }
  std::string out;
  for (const std::string& n : names) out += (out.empty() ? "" : "+") + n;
  return out;
}

Tensor in_buffer(comm::Buffer& buffer, const comm::Handle& handle, const Tensor& y) {
  Tensor t = buffer.combine_input(handle, y.dim(1), y.dtype());
  if (y.nbytes()) std::memcpy(t.raw(), y.raw(), y.nbytes());
  return t;
}

}  // namespace epx::bench
