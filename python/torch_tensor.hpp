// torch.Tensor <-> epx::Tensor without copies, through the Python API of
// torch only (data_ptr() in, DLPack out), so the module links no libtorch
// and works with whichever torch the interpreter has.
#pragma once

#include <initializer_list>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <epx/error.hpp>
#include <epx/tensor.hpp>

namespace epx::python {

namespace py = pybind11;

// One tensor argument of a call, viewed as an epx::Tensor that keeps the
// torch tensor alive. A tensor that cannot be viewed (not contiguous, a dtype
// epx lacks, not a tensor) becomes an undefined Tensor plus `problem`: the
// collective call then rejects it on every rank, as it rejects any bad input,
// and this rank adds `problem` to the message (see collective()).
struct TorchArg {
  Tensor tensor;
  std::string problem;
};

// obj: a torch.Tensor or None (undefined, no problem). `as` reinterprets a
// one-byte tensor (torch 1.x has no float8: e4m3 comes as uint8).
TorchArg from_torch(py::handle obj, const char* name, std::optional<DType> as = std::nullopt);

// A torch tensor viewing t's memory (DLPack), which keeps t's storage alive;
// None for an undefined t. e4m3/e5m2 come back as torch.float8_* where torch
// has them, else as uint8; boolean as torch.bool.
py::object to_torch(const Tensor& t);

// epx's dtype for a torch dtype (e.g. torch.bfloat16); Error(InvalidArgument) if none.
DType dtype_from_torch(py::handle torch_dtype);

// Runs `call` (a collective epx call) without the GIL, so other Python
// threads run while it waits on peers. If an argument could not be viewed,
// its problem is added to the error the call raises on this rank; a call
// that accepted the undefined tensor (an optional one) raises it here alone.
template <class F>
auto collective(std::initializer_list<const TorchArg*> args, F&& call) {
  std::string problems;
  for (const TorchArg* a : args)
    if (!a->problem.empty()) problems += (problems.empty() ? "" : "; ") + a->problem;
  try {
    if constexpr (std::is_void_v<decltype(call())>) {
      {
        py::gil_scoped_release unlocked;
        call();
      }
      if (!problems.empty()) throw Error(ErrorCode::InvalidArgument, problems);
    } else {
      auto result = [&] {
        py::gil_scoped_release unlocked;
        return call();
      }();
      if (!problems.empty()) throw Error(ErrorCode::InvalidArgument, problems);
      return result;
    }
  } catch (const Error& e) {
    if (problems.empty() || std::string(e.what()).find(problems) != std::string::npos) throw;
    throw Error(e.code(), std::string(e.what()) + "; on this rank: " + problems);
  }
}

}  // namespace epx::python
