#include <epx/error.hpp>

#include "python/bindings.hpp"

namespace epx::python {

namespace py = pybind11;

void register_errors(py::module_& m) {
  py::enum_<ErrorCode>(m, "ErrorCode", "What kind of failure an epx.Error reports")
      .value("InvalidArgument", ErrorCode::InvalidArgument)
      .value("OutOfMemory", ErrorCode::OutOfMemory)
      .value("Timeout", ErrorCode::Timeout)
      .value("PeerFailure", ErrorCode::PeerFailure)
      .value("Unsupported", ErrorCode::Unsupported)
      .value("Internal", ErrorCode::Internal);

  // A RuntimeError subclass, so that code catching RuntimeError (as it would
  // for torch.distributed failures) catches epx's too. Never freed: the
  // translator below may run until the interpreter is gone.
  static PyObject* error_type = PyErr_NewExceptionWithDoc(
      "epx.Error",
      "An epx failure: .code (epx.ErrorCode) and the C++ message, which names the rank, "
      "the operation, the argument and the value.",
      PyExc_RuntimeError, nullptr);
  if (!error_type) throw py::error_already_set();
  m.attr("Error") = py::handle(error_type);

  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const Error& e) {
      py::object exc = py::reinterpret_borrow<py::object>(error_type)(e.what());
      exc.attr("code") = py::cast(e.code());
      exc.attr("poisoned") = e.poisoned();  // the objects on the group must be rebuilt
      PyErr_SetObject(error_type, exc.ptr());
    }
  });
}

}  // namespace epx::python
