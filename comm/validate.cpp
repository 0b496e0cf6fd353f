#include "comm/validate.hpp"

#include <algorithm>
#include <string>

#include "comm/handle.hpp"
#include "core/check.hpp"

namespace epx::comm {

void check_tensor(const Tensor& t, const char* op, const char* name,
                  std::initializer_list<DType> dtypes, int ndim) {
  EPX_CHECK(t.defined(), InvalidArgument, op, ": ", name, " is undefined");
  EPX_CHECK(t.device() == Device::cpu, InvalidArgument, op, ": ", name, " is ", t.describe(),
            "; this build of epx comm moves host tensors only");
  if (std::find(dtypes.begin(), dtypes.end(), t.dtype()) == dtypes.end()) {
    std::string want;
    for (DType d : dtypes) want += core::concat(want.empty() ? "" : " or ", dtype_name(d));
    EPX_THROW(InvalidArgument, op, ": ", name, " is ", t.describe(), ", expected dtype ", want);
  }
  EPX_CHECK(t.ndim() == ndim, InvalidArgument, op, ": ", name, " is ", t.describe(), ", expected ",
            ndim, " dimensions");
}

void check_dim(const Tensor& t, int d, std::int64_t want, const char* op, const char* name,
               const char* want_name) {
  EPX_CHECK(t.dim(d) == want, InvalidArgument, op, ": ", name, " is ", t.describe(), ", expected ",
            name, ".dim(", d, ") = ", want_name, " = ", want);
}

void check_topk_ids(const Tensor& topk_idx, int num_experts, const char* op) {
  const std::int64_t T = topk_idx.dim(0), K = topk_idx.dim(1);
  const std::int64_t* idx = topk_idx.data<std::int64_t>();
  for (std::int64_t t = 0; t < T; ++t) {
    const std::int64_t* row = idx + t * K;
    for (std::int64_t k = 0; k < K; ++k) {
      const std::int64_t e = row[k];
      EPX_CHECK(e >= -1 && e < num_experts, InvalidArgument, op, ": topk_idx[", t, ",", k, "] = ", e,
                ", expected -1 or 0 <= id < num_experts = ", num_experts);
      if (e < 0) continue;
      for (std::int64_t j = 0; j < k; ++j)
        EPX_CHECK(row[j] != e, InvalidArgument, op, ": topk_idx[", t, ",", k, "] = ", e,
                  " repeats topk_idx[", t, ",", j, "]; a token's experts must be distinct");
    }
  }
}

void check_handle(const Handle& handle, std::uint64_t buffer_id, int group_size, const char* op) {
  EPX_CHECK(handle.defined(), InvalidArgument, op,
            ": handle is undefined (use the one a dispatch returned)");
  EPX_CHECK(handle.state()->buffer_id == buffer_id && handle.state()->num_ranks == group_size,
            InvalidArgument, op, ": handle comes from another Buffer (buffer ",
            handle.state()->buffer_id, ", this is buffer ", buffer_id, ")");
}

std::uint64_t fingerprint(const Tensor& topk_idx) {
  // FNV-1a over the shape and the 64-bit ids.
  std::uint64_t h = 1469598103934665603ull;
  auto mix = [&h](std::uint64_t v) {
    h ^= v;
    h *= 1099511628211ull;
  };
  for (std::int64_t d : topk_idx.shape()) mix(static_cast<std::uint64_t>(d));
  const std::int64_t* idx = topk_idx.data<std::int64_t>();
  for (std::int64_t i = 0; i < topk_idx.numel(); ++i) mix(static_cast<std::uint64_t>(idx[i]));
  return h;
}

}  // namespace epx::comm
