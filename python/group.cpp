#include <mpi.h>

#include <epx/group.hpp>

#include "python/bindings.hpp"

namespace epx::python {

namespace py = pybind11;
using namespace py::literals;

namespace {

bool g_initialized_mpi = false;

// Registered with Py_AtExit: it runs after the interpreter has torn down its
// modules, so the Buffers and Groups of a script (whose destructors free MPI
// windows and communicators) are gone before MPI is.
// The barrier first: a rank whose peers already left MPI_Finalize times out
// flushing the UCX endpoints of the one-sided windows to them.
void finalize_mpi() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) return;
  MPI_Barrier(MPI_COMM_WORLD);
  MPI_Finalize();
}

// A script should not have to call MPI_Init: the module does, on import, when
// nobody did (mpi4py imported first, or an embedding C++ program, did it
// already and keeps the duty to finalise). SERIALIZED, not SINGLE: calls
// release the GIL, so the thread that makes them need not be the main one.
void init_mpi() {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (initialized) return;
  int provided = 0;
  if (MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided) != MPI_SUCCESS)
    throw std::runtime_error("epx: MPI_Init_thread failed");
  g_initialized_mpi = true;
  Py_AtExit(finalize_mpi);
}

// An mpi4py communicator (anything with py2f()) or None for MPI_COMM_WORLD.
// py2f/f2c is the handle conversion that needs no mpi4py headers at build time.
MPI_Comm to_comm(const py::object& comm) {
  if (comm.is_none()) return MPI_COMM_WORLD;
  if (!py::hasattr(comm, "py2f"))
    throw py::type_error("Group: comm must be an mpi4py communicator or None (MPI_COMM_WORLD)");
  return MPI_Comm_f2c(comm.attr("py2f")().cast<MPI_Fint>());
}

}  // namespace

void register_group(py::module_& m) {
  init_mpi();
  m.def("mpi_initialized_by_epx", [] { return g_initialized_mpi; },
        "Whether importing epx initialised MPI (it then finalises it at exit).");

  py::class_<Group>(m, "Group", "An MPI communicator and its node topology (collective to build)")
      .def(py::init([](const py::object& comm, int ranks_per_node) {
             MPI_Comm c = to_comm(comm);
             py::gil_scoped_release unlocked;
             return Group(c, ranks_per_node);
           }),
           "comm"_a = py::none(), "ranks_per_node"_a = 0)
      .def_property_readonly("rank", &Group::rank)
      .def_property_readonly("size", &Group::size)
      .def_property_readonly("node", &Group::node)
      .def_property_readonly("num_nodes", &Group::num_nodes)
      .def_property_readonly("local_rank", &Group::local_rank)
      .def_property_readonly("local_size", &Group::local_size)
      .def_property_readonly("node_ranks", &Group::node_ranks)
      .def("node_of", &Group::node_of, "rank"_a)
      .def("split",
           [](const Group& g, int color, int key) {
             py::gil_scoped_release unlocked;
             return g.split(color, key);
           },
           "color"_a, "key"_a)
      .def("abort", &Group::abort, "reason"_a)
      .def_property_readonly("aborted", &Group::aborted)
      .def_property_readonly("abort_reason", &Group::abort_reason)
      .def("tag", &Group::tag)
      .def("__repr__", [](const Group& g) {
        return "epx.Group(rank=" + std::to_string(g.rank()) + ", size=" + std::to_string(g.size()) +
               ", num_nodes=" + std::to_string(g.num_nodes()) + ")";
      });
}

}  // namespace epx::python
