#include <cstdlib>
#include <cstring>
#include <new>

#include <epx/tensor.hpp>

#include "core/check.hpp"

namespace epx {

std::size_t dtype_size(DType dtype) noexcept {
  switch (dtype) {
    case DType::f32: case DType::i32: return 4;
    case DType::bf16: case DType::f16: return 2;
    case DType::e4m3: case DType::e5m2: case DType::u8: case DType::boolean: return 1;
    case DType::i64: case DType::f64: return 8;
  }
  return 0;
}

const char* dtype_name(DType dtype) noexcept {
  switch (dtype) {
    case DType::f32: return "f32";
    case DType::bf16: return "bf16";
    case DType::f16: return "f16";
    case DType::e4m3: return "e4m3";
    case DType::e5m2: return "e5m2";
    case DType::i32: return "i32";
    case DType::i64: return "i64";
    case DType::u8: return "u8";
    case DType::boolean: return "boolean";
    case DType::f64: return "f64";
  }
  return "unknown";
}

const char* device_name(Device device) noexcept { return device == Device::cuda ? "cuda" : "cpu"; }

namespace detail {
void throw_bad_data_type(DType have, const char* requested) {
  EPX_THROW(InvalidArgument, "Tensor::data<", requested, ">(): tensor dtype is ", dtype_name(have));
}
}  // namespace detail

namespace {
void check_shape(const std::vector<std::int64_t>& shape, const char* op) {
  EPX_CHECK_LE(shape.size(), std::size_t{Tensor::kMaxDims}, InvalidArgument, op, ": shape rank");
  for (std::size_t i = 0; i < shape.size(); ++i)
    EPX_CHECK(shape[i] >= 0, InvalidArgument, op, ": shape[", i, "] = ", shape[i], ", expected >= 0");
}

std::int64_t count(const std::vector<std::int64_t>& shape) {
  std::int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}
}  // namespace

Tensor Tensor::empty(std::vector<std::int64_t> shape, DType dtype) {
  check_shape(shape, "Tensor::empty");
  const std::size_t bytes = static_cast<std::size_t>(count(shape)) * dtype_size(dtype);
  // 64-byte alignment: rows feed vectorised loops and memcpy.
  void* p = std::aligned_alloc(64, (bytes + 63) / 64 * 64 + 64);
  if (!p) EPX_THROW(OutOfMemory, "Tensor::empty: cannot allocate ", bytes, " bytes");
  Tensor t;
  t.owner_ = std::shared_ptr<void>(p, [](void* q) { std::free(q); });
  t.ptr_ = p;
  t.shape_ = std::move(shape);
  t.dtype_ = dtype;
  t.defined_ = true;
  return t;
}

Tensor Tensor::zeros(std::vector<std::int64_t> shape, DType dtype) {
  Tensor t = empty(std::move(shape), dtype);
  std::memset(t.ptr_, 0, t.nbytes());
  return t;
}

Tensor Tensor::wrap(void* ptr, std::vector<std::int64_t> shape, DType dtype, Device device) {
  return view(nullptr, ptr, std::move(shape), dtype, device);
}

Tensor Tensor::view(std::shared_ptr<void> owner, void* ptr, std::vector<std::int64_t> shape,
                    DType dtype, Device device) {
  check_shape(shape, "Tensor::wrap");
  EPX_CHECK(ptr != nullptr || count(shape) == 0, InvalidArgument,
            "Tensor::wrap: null pointer for a tensor of ", count(shape), " elements");
  Tensor t;
  t.owner_ = std::move(owner);
  t.ptr_ = ptr;
  t.shape_ = std::move(shape);
  t.dtype_ = dtype;
  t.device_ = device;
  t.defined_ = true;
  return t;
}

std::int64_t Tensor::dim(int i) const {
  const int n = ndim();
  const int j = i < 0 ? i + n : i;
  EPX_CHECK(j >= 0 && j < n, InvalidArgument, "Tensor::dim(", i, "): tensor ", describe(),
            " has ", n, " dimensions");
  return shape_[static_cast<std::size_t>(j)];
}

std::int64_t Tensor::numel() const noexcept { return defined_ ? count(shape_) : 0; }

std::string Tensor::describe() const {
  if (!defined_) return "undefined";
  std::string s = dtype_name(dtype_);
  s += '[';
  for (std::size_t i = 0; i < shape_.size(); ++i) {
    if (i) s += ',';
    s += std::to_string(shape_[i]);
  }
  s += "] ";
  s += device_name(device_);
  return s;
}

Tensor Tensor::clone() const {
  EPX_CHECK(defined_, InvalidArgument, "Tensor::clone: undefined tensor");
  EPX_CHECK(device_ == Device::cpu, Unsupported, "Tensor::clone: ", describe(),
            " is not host memory");
  Tensor t = empty(shape_, dtype_);
  if (nbytes()) std::memcpy(t.ptr_, ptr_, nbytes());
  return t;
}

}  // namespace epx
