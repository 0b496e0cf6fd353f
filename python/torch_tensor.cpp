#include "python/torch_tensor.hpp"

#include <cstdint>
#include <algorithm>
#include <memory>
#include <vector>

namespace epx::python {

namespace {

// The DLPack ABI (v0.6, the one every torch since 1.10 reads from a capsule
// named "dltensor"). Declared here rather than taken from a header: it is
// fixed, and torch's own copy is not installed by python3-torch.
struct DLDevice {
  std::int32_t device_type;  // kDLCPU = 1, kDLCUDA = 2
  std::int32_t device_id;
};
struct DLDataType {
  std::uint8_t code;  // kDLInt = 0, kDLUInt = 1, kDLFloat = 2, kDLBfloat = 4
  std::uint8_t bits;
  std::uint16_t lanes;
};
struct DLTensor {
  void* data;
  DLDevice device;
  std::int32_t ndim;
  DLDataType dtype;
  std::int64_t* shape;
  std::int64_t* strides;
  std::uint64_t byte_offset;
};
struct DLManagedTensor {
  DLTensor dl_tensor;
  void* manager_ctx;
  void (*deleter)(DLManagedTensor*);
};

// What a capsule owns: a copy of the epx Tensor (its storage stays alive, in
// the receive space too, until torch frees the view), shape and strides.
struct Exported {
  Tensor tensor;
  std::vector<std::int64_t> shape, strides;
  DLManagedTensor managed{};
};

void delete_exported(DLManagedTensor* m) { delete static_cast<Exported*>(m->manager_ctx); }

// A capsule torch never consumed (an error between creation and from_dlpack)
// still frees its tensor; a consumed one was renamed "used_dltensor".
void capsule_destructor(PyObject* capsule) {
  if (PyCapsule_IsValid(capsule, "dltensor")) {
    auto* m = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(capsule, "dltensor"));
    if (m && m->deleter) m->deleter(m);
  }
}

// The bits epx hands DLPack. float8 and bool travel as uint8 (DLPack v0.6
// has no float8 code, and torch 1.x reads kDLBool not at all) and are viewed
// as their torch dtype afterwards.
DLDataType dl_dtype(DType d) {
  switch (d) {
    case DType::f32: return {2, 32, 1};
    case DType::f64: return {2, 64, 1};
    case DType::f16: return {2, 16, 1};
    case DType::bf16: return {4, 16, 1};
    case DType::i32: return {0, 32, 1};
    case DType::i64: return {0, 64, 1};
    case DType::u8: case DType::e4m3: case DType::e5m2: case DType::boolean: return {1, 8, 1};
  }
  return {1, 8, 1};
}

// Holds a Python object from C++. epx may drop its last copy of a Tensor
// without the GIL (inside a collective call), so the release takes the GIL;
// after the interpreter is gone the reference is left, not touched.
std::shared_ptr<void> keep_alive(py::handle obj) {
  return std::shared_ptr<void>(new py::object(py::reinterpret_borrow<py::object>(obj)), [](void* p) {
    auto* o = static_cast<py::object*>(p);
    if (!Py_IsInitialized()) {
      o->release();
      delete o;
      return;
    }
    py::gil_scoped_acquire locked;
    delete o;
  });
}

std::optional<DType> dtype_from_name(const std::string& name) {
  static const std::pair<const char*, DType> table[] = {
      {"torch.float32", DType::f32},        {"torch.bfloat16", DType::bf16},
      {"torch.float16", DType::f16},        {"torch.float64", DType::f64},
      {"torch.int32", DType::i32},          {"torch.int64", DType::i64},
      {"torch.uint8", DType::u8},           {"torch.bool", DType::boolean},
      {"torch.float8_e4m3fn", DType::e4m3}, {"torch.float8_e5m2", DType::e5m2},
  };
  for (const auto& [n, d] : table)
    if (name == n) return d;
  return std::nullopt;
}

}  // namespace

DType dtype_from_torch(py::handle torch_dtype) {
  const std::string name = py::str(torch_dtype);
  if (auto d = dtype_from_name(name)) return *d;
  throw Error(ErrorCode::InvalidArgument,
              "dtype " + name + " has no epx equivalent (float32, bfloat16, float16, float64, int32, "
              "int64, uint8, bool, float8_e4m3fn, float8_e5m2)");
}

TorchArg from_torch(py::handle obj, const char* name, std::optional<DType> as) {
  TorchArg a;
  if (obj.is_none()) return a;
  if (!py::hasattr(obj, "data_ptr") || !py::hasattr(obj, "is_contiguous")) {
    a.problem = std::string(name) + " is a " + std::string(py::str(obj.get_type().attr("__name__"))) +
                ", expected a torch.Tensor";
    return a;
  }
  const std::string dtype_name = py::str(obj.attr("dtype"));
  std::optional<DType> dtype = dtype_from_name(dtype_name);
  if (!dtype) {
    a.problem = std::string(name) + " is " + dtype_name + ", which epx does not move";
    return a;
  }
  if (as) {
    if (dtype_size(*dtype) != dtype_size(*as)) {
      a.problem = std::string(name) + " is " + dtype_name + ", expected a one-byte dtype to view as " +
                  epx::dtype_name(*as);
      return a;
    }
    dtype = as;
  }
  const std::string device_type = py::str(obj.attr("device").attr("type"));
  Device device = Device::cpu;
  if (device_type == "cuda") {
    device = Device::cuda;  // viewed as is: the call says which devices it takes
  } else if (device_type != "cpu") {
    a.problem = std::string(name) + " is on device " + device_type + ", expected cpu";
    return a;
  }
  if (!obj.attr("is_contiguous")().cast<bool>()) {
    // A copy would hide a cost and break in-place results: the caller decides.
    a.problem = std::string(name) + " is not contiguous (call .contiguous() first)";
    return a;
  }
  std::vector<std::int64_t> shape;
  for (py::handle d : obj.attr("shape")) shape.push_back(d.cast<std::int64_t>());
  if (shape.size() > static_cast<std::size_t>(Tensor::kMaxDims)) {
    a.problem = std::string(name) + " has " + std::to_string(shape.size()) +
                " dimensions, epx tensors have at most " + std::to_string(Tensor::kMaxDims);
    return a;
  }
  auto* ptr = reinterpret_cast<void*>(obj.attr("data_ptr")().cast<std::uintptr_t>());
  a.tensor = Tensor::view(keep_alive(obj), ptr, std::move(shape), *dtype, device);
  return a;
}

py::object to_torch(const Tensor& t) {
  if (!t.defined()) return py::none();
  auto owned = std::make_unique<Exported>();
  owned->tensor = t;
  owned->shape = t.shape();
  owned->strides.assign(owned->shape.size(), 1);
  for (int i = static_cast<int>(owned->shape.size()) - 2; i >= 0; --i)
    owned->strides[i] = owned->strides[i + 1] * std::max<std::int64_t>(owned->shape[i + 1], 1);
  DLTensor& dl = owned->managed.dl_tensor;
  dl.data = owned->tensor.raw();
  dl.device = {t.device() == Device::cuda ? 2 : 1, 0};
  dl.ndim = static_cast<std::int32_t>(owned->shape.size());
  dl.dtype = dl_dtype(t.dtype());
  dl.shape = owned->shape.data();
  dl.strides = owned->strides.data();
  dl.byte_offset = 0;
  owned->managed.manager_ctx = owned.get();
  owned->managed.deleter = delete_exported;
  DLManagedTensor* managed = &owned->managed;
  py::capsule capsule(managed, "dltensor", capsule_destructor);
  owned.release();  // the capsule owns it now (its destructor, or torch's deleter call)
  py::object out = py::module_::import("torch.utils.dlpack").attr("from_dlpack")(capsule);
  py::module_ torch = py::module_::import("torch");
  switch (t.dtype()) {
    case DType::boolean: return out.attr("view")(torch.attr("bool"));
    case DType::e4m3:
      if (py::hasattr(torch, "float8_e4m3fn")) return out.attr("view")(torch.attr("float8_e4m3fn"));
      return out;
    case DType::e5m2:
      if (py::hasattr(torch, "float8_e5m2")) return out.attr("view")(torch.attr("float8_e5m2"));
      return out;
    default: return out;
  }
}

}  // namespace epx::python
