// epxTensor_t <-> epx::Tensor, and the copy of a result into caller memory.
#include <vector>

#include "capi/capi.hpp"

namespace epx::capi {

// The C enum is the C++ enum's numbers, so a cast converts.
static_assert(epxFloat32 == int(DType::f32) && epxBfloat16 == int(DType::bf16) &&
              epxFloat16 == int(DType::f16) && epxFloat8E4M3 == int(DType::e4m3) &&
              epxFloat8E5M2 == int(DType::e5m2) && epxInt32 == int(DType::i32) &&
              epxInt64 == int(DType::i64) && epxUint8 == int(DType::u8) &&
              epxBool == int(DType::boolean) && epxFloat64 == int(DType::f64));
static_assert(EPX_MAX_DIMS == Tensor::kMaxDims);

namespace {
constexpr std::int64_t kMaxElements = std::int64_t{1} << 48;  // no overflow in bytes

std::string shape_text(const epxTensor_t& t) {
  std::string s = "[";
  for (int d = 0; d < t.ndim && d < EPX_MAX_DIMS; ++d) s += core::concat(d ? "," : "", t.shape[d]);
  return s + "]";
}

// Why t describes no tensor, or "" when it does.
std::string describe_problem(const epxTensor_t& t, const char* name) {
  if (t.ndim < 0 || t.ndim > EPX_MAX_DIMS)
    return core::concat(name, ".ndim = ", t.ndim, ", expected 0 to ", EPX_MAX_DIMS);
  const int dtype = static_cast<int>(t.dtype);
  if (dtype < epxFloat32 || dtype > epxFloat64)
    return core::concat(name, ".dtype = ", dtype, ", expected an epxDataType_t (0 to ",
                        int(epxFloat64), ")");
  double numel = 1;  // in floating point: the product of four dims may overflow int64
  for (int d = 0; d < t.ndim; ++d) {
    if (t.shape[d] < 0)
      return core::concat(name, ".shape[", d, "] = ", t.shape[d], ", expected >= 0");
    numel *= double(t.shape[d]);
  }
  if (numel > double(kMaxElements))
    return core::concat(name, " ", shape_text(t), " has more than ", kMaxElements, " elements");
  if (numel > 0 && t.data == nullptr)
    return core::concat(name, ".data is NULL for ", numel, " elements");
  return "";
}

}  // namespace

Tensor to_tensor(const epxTensor_t* t, const char* name, std::string* problem) {
  if (t == nullptr) return Tensor();
  const std::string why = describe_problem(*t, name);
  if (!why.empty()) {
    if (problem->empty()) *problem = why;
    return Tensor();
  }
  return Tensor::wrap(t->data, std::vector<std::int64_t>(t->shape, t->shape + t->ndim),
                      static_cast<DType>(t->dtype));
}

epxTensor_t to_c(Tensor& t) {
  epxTensor_t c{};
  if (!t.defined()) return c;
  c.data = t.raw();
  c.dtype = static_cast<epxDataType_t>(t.dtype());
  c.ndim = t.ndim();
  for (int d = 0; d < t.ndim(); ++d) c.shape[d] = t.dim(d);
  return c;
}

void copy_out(const Tensor& from, const epxTensor_t* out, const char* call) {
  EPX_CHECK(out != nullptr, InvalidArgument, call, ": out is NULL");
  const std::string why = describe_problem(*out, "out");
  EPX_CHECK(why.empty(), InvalidArgument, call, ": ", why);
  bool same = out->ndim == from.ndim() && static_cast<int>(out->dtype) == int(from.dtype());
  for (int d = 0; same && d < from.ndim(); ++d) same = out->shape[d] == from.dim(d);
  EPX_CHECK(same, InvalidArgument, call, ": out is ", dtype_name(static_cast<DType>(out->dtype)),
            shape_text(*out), ", expected ", from.describe(),
            " (the call completed on every rank; only this copy failed)");
  if (from.nbytes() > 0) std::memcpy(out->data, from.raw(), from.nbytes());
}

}  // namespace epx::capi
