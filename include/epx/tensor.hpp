// epx::Tensor: a row-major, contiguous array of 0 to 4 dimensions in host or
// CUDA memory. It either owns reference-counted storage (Tensor::empty) or
// wraps memory the caller owns (Tensor::wrap), so a trainer can hand in its
// own buffers without copies. Copies of a Tensor share the storage.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include <epx/config.hpp>

namespace epx {

// FP8 is OCP E4M3FN (max 448, no infinities) and E5M2. bf16/f16 are read
// as std::uint16_t bit patterns, FP8 as std::uint8_t, boolean (one byte) as bool.
// f64 (last, so that the older values keep their numbers) is for reference
// models and gradients that must sum without f32 rounding (pipeline tests).
enum class DType : std::uint8_t { f32, bf16, f16, e4m3, e5m2, i32, i64, u8, boolean, f64 };

enum class Device : std::uint8_t { cpu, cuda };

EPX_API std::size_t dtype_size(DType dtype) noexcept;
EPX_API const char* dtype_name(DType dtype) noexcept;
EPX_API const char* device_name(Device device) noexcept;

namespace detail {
// Whether data<T>() may view a tensor of this dtype.
template <class T>
constexpr bool dtype_holds(DType d) noexcept {
  using U = std::remove_cv_t<T>;
  if constexpr (std::is_same_v<U, float>) return d == DType::f32;
  else if constexpr (std::is_same_v<U, double>) return d == DType::f64;
  else if constexpr (std::is_same_v<U, std::int32_t>) return d == DType::i32;
  else if constexpr (std::is_same_v<U, std::int64_t>) return d == DType::i64;
  else if constexpr (std::is_same_v<U, std::uint16_t>) return d == DType::bf16 || d == DType::f16;
  else if constexpr (std::is_same_v<U, bool>) return d == DType::boolean;
  else if constexpr (std::is_same_v<U, std::uint8_t>)
    return d == DType::u8 || d == DType::e4m3 || d == DType::e5m2 || d == DType::boolean;
  else if constexpr (std::is_void_v<U>) return true;
  else return false;
}
[[noreturn]] EPX_API void throw_bad_data_type(DType have, const char* requested);
}  // namespace detail

class EPX_API Tensor {
 public:
  static constexpr int kMaxDims = 4;

  Tensor() = default;  // undefined: defined() is false

  // New host storage, uninitialised / zero-filled.
  static Tensor empty(std::vector<std::int64_t> shape, DType dtype);
  static Tensor zeros(std::vector<std::int64_t> shape, DType dtype);
  // A view of caller memory; no copy, the caller keeps it alive.
  static Tensor wrap(void* ptr, std::vector<std::int64_t> shape, DType dtype,
                     Device device = Device::cpu);
  // A view of memory kept alive by `owner` (released with the last copy).
  static Tensor view(std::shared_ptr<void> owner, void* ptr, std::vector<std::int64_t> shape,
                     DType dtype, Device device = Device::cpu);

  bool defined() const noexcept { return defined_; }
  int ndim() const noexcept { return static_cast<int>(shape_.size()); }
  std::int64_t dim(int i) const;  // i may be negative (from the end)
  const std::vector<std::int64_t>& shape() const noexcept { return shape_; }
  std::int64_t numel() const noexcept;
  std::size_t nbytes() const noexcept { return static_cast<std::size_t>(numel()) * dtype_size(dtype_); }
  DType dtype() const noexcept { return dtype_; }
  Device device() const noexcept { return device_; }
  std::string describe() const;  // e.g. "bf16[128,7168] cpu"

  template <class T>
  T* data() {
    if (!detail::dtype_holds<T>(dtype_)) detail::throw_bad_data_type(dtype_, type_label<T>());
    return static_cast<T*>(ptr_);
  }
  template <class T>
  const T* data() const {
    if (!detail::dtype_holds<T>(dtype_)) detail::throw_bad_data_type(dtype_, type_label<T>());
    return static_cast<const T*>(ptr_);
  }
  void* raw() noexcept { return ptr_; }
  const void* raw() const noexcept { return ptr_; }

  Tensor clone() const;  // deep copy into new host storage

 private:
  template <class T>
  static const char* type_label() noexcept {
    using U = std::remove_cv_t<T>;
    if constexpr (std::is_same_v<U, float>) return "float";
    else if constexpr (std::is_same_v<U, double>) return "double";
    else if constexpr (std::is_same_v<U, std::int32_t>) return "int32_t";
    else if constexpr (std::is_same_v<U, std::int64_t>) return "int64_t";
    else if constexpr (std::is_same_v<U, std::uint16_t>) return "uint16_t";
    else if constexpr (std::is_same_v<U, bool>) return "bool";
    else if constexpr (std::is_same_v<U, std::uint8_t>) return "uint8_t";
    else return "an unsupported element type";
  }

  std::shared_ptr<void> owner_;
  void* ptr_ = nullptr;
  std::vector<std::int64_t> shape_;
  DType dtype_ = DType::f32;
  Device device_ = Device::cpu;
  bool defined_ = false;
};

}  // namespace epx
