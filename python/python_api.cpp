// The compiled part of the `epx` package (epx/_epx*.so). Only the register
// calls live here; each part of the API binds itself in its own file.
#include <epx/config.hpp>

#include "python/bindings.hpp"

PYBIND11_MODULE(_epx, m) {
  m.doc() = "epx: expert-parallel dispatch and combine (the C++ core; import epx instead)";
  m.attr("__version__") = EPX_VERSION_STRING;
  epx::python::register_errors(m);
  epx::python::register_group(m);
  epx::python::register_comm(m);
  epx::python::register_balancer(m);
  epx::python::register_pipeline(m);
}
