// The register functions of the Python module, one per part of the C++ API;
// python_api.cpp calls them in order (each may use the types of those before).
#pragma once

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>  // in every file, so that all agree on how lists convert

namespace epx::python {

void register_errors(pybind11::module_& m);    // epx.Error, epx.ErrorCode
void register_group(pybind11::module_& m);     // MPI set-up, epx.Group
void register_comm(pybind11::module_& m);      // epx.Buffer and its results
void register_balancer(pybind11::module_& m);  // epx._epx.balancer
void register_pipeline(pybind11::module_& m);  // epx._epx.pipeline

}  // namespace epx::python
