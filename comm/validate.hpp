// Argument checks shared by the comm calls. Each throws InvalidArgument with
// the call, the argument, the received and the expected value; the callers run
// them inside validation_error() so the verdict is shared with every rank.
#pragma once

#include <cstdint>
#include <initializer_list>

#include <epx/comm.hpp>
#include <epx/tensor.hpp>

namespace epx::comm {

// t is defined, in host memory (this build's comm moves host tensors), has
// one of `dtypes` and `ndim` dimensions.
void check_tensor(const Tensor& t, const char* op, const char* name,
                  std::initializer_list<DType> dtypes, int ndim);

// dim `d` of t equals `want` (what `want` is, e.g. "x.dim(0)", in `want_name`).
void check_dim(const Tensor& t, int d, std::int64_t want, const char* op, const char* name,
               const char* want_name);

// Every id is -1 or in [0, num_experts), and no expert repeats within a token.
void check_topk_ids(const Tensor& topk_idx, int num_experts, const char* op);

// `handle` is defined and was made by the buffer `buffer_id` of `group_size` ranks.
void check_handle(const Handle& handle, std::uint64_t buffer_id, int group_size, const char* op);

// Identifies a topk_idx tensor by content and shape.
std::uint64_t fingerprint(const Tensor& topk_idx);

}  // namespace epx::comm
