#include <epx/pipeline_tools.hpp>

#include "python/bindings.hpp"

namespace epx::python {

namespace py = pybind11;
using namespace py::literals;
namespace pp = epx::pipeline;

// Schedules, the validator, the simulator and the automatic choice: plain
// data for planning from Python. The Executor (a C++ Stage per rank) is not
// bound: a Python trainer runs its own stages.
void register_pipeline(py::module_& parent) {
  py::module_ m = parent.def_submodule("pipeline", "epx::pipeline: schedules and their simulation");

  py::enum_<pp::OpKind>(m, "OpKind")
      .value("F", pp::OpKind::F)
      .value("B", pp::OpKind::B)
      .value("Bi", pp::OpKind::Bi)
      .value("W", pp::OpKind::W)
      .value("FB", pp::OpKind::FB);
  py::enum_<pp::ScheduleKind>(m, "ScheduleKind")
      .value("gpipe", pp::ScheduleKind::gpipe)
      .value("one_f_one_b", pp::ScheduleKind::one_f_one_b)
      .value("zb_h1", pp::ScheduleKind::zb_h1)
      .value("dualpipe", pp::ScheduleKind::dualpipe)
      .value("dualpipe_v", pp::ScheduleKind::dualpipe_v);

  py::class_<pp::Op>(m, "Op")
      .def_readonly("kind", &pp::Op::kind)
      .def_readonly("mb", &pp::Op::mb)
      .def_readonly("chunk", &pp::Op::chunk)
      .def_readonly("b_mb", &pp::Op::b_mb)
      .def_readonly("b_chunk", &pp::Op::b_chunk)
      .def("__eq__", [](const pp::Op& a, const pp::Op& b) { return a == b; })
      .def("__repr__", [](const pp::Op& op) { return pp::to_string(op); });
  py::class_<pp::Location>(m, "Location")
      .def_readonly("rank", &pp::Location::rank)
      .def_readonly("chunk", &pp::Location::chunk)
      .def("__repr__", [](const pp::Location& l) {
        return "(" + std::to_string(l.rank) + ", " + std::to_string(l.chunk) + ")";
      });

  py::class_<pp::Schedule>(m, "Schedule")
      .def_readonly("kind", &pp::Schedule::kind)
      .def_readonly("ranks", &pp::Schedule::ranks)
      .def_readonly("microbatches", &pp::Schedule::microbatches)
      .def_readonly("stages", &pp::Schedule::stages)
      .def_readonly("chunks_per_rank", &pp::Schedule::chunks_per_rank)
      .def_readonly("chunk_fraction", &pp::Schedule::chunk_fraction)
      .def_readonly("stage_of", &pp::Schedule::stage_of)
      .def_readonly("paths", &pp::Schedule::paths)
      .def_readonly("path_of", &pp::Schedule::path_of)
      .def_readonly("ops", &pp::Schedule::ops)
      .def_property_readonly("name", [](const pp::Schedule& s) { return std::string(pp::to_string(s.kind)); });

  py::class_<pp::Costs>(m, "Costs")
      .def(py::init([](double f, double b, double w, double fb, double comm, double p2p) {
             return pp::Costs{f, b, w, fb, comm, p2p};
           }),
           "f"_a = 1.0, "b"_a = 2.0, "w"_a = 1.0, "fb"_a = -1.0, "comm"_a = 0.0, "p2p"_a = 0.0)
      .def_readwrite("f", &pp::Costs::f)
      .def_readwrite("b", &pp::Costs::b)
      .def_readwrite("w", &pp::Costs::w)
      .def_readwrite("fb", &pp::Costs::fb)
      .def_readwrite("comm", &pp::Costs::comm)
      .def_readwrite("p2p", &pp::Costs::p2p);

  py::class_<pp::OpTime>(m, "OpTime")
      .def_readonly("start", &pp::OpTime::start)
      .def_readonly("end", &pp::OpTime::end);
  py::class_<pp::Simulation>(m, "Simulation")
      .def_readonly("makespan", &pp::Simulation::makespan)
      .def_readonly("busy", &pp::Simulation::busy)
      .def_readonly("bubble", &pp::Simulation::bubble)
      .def_readonly("max_bubble", &pp::Simulation::max_bubble)
      .def_readonly("peak_activations", &pp::Simulation::peak_activations)
      .def_readonly("param_copies", &pp::Simulation::param_copies)
      .def_readonly("comm_hidden", &pp::Simulation::comm_hidden)
      .def_readonly("total_comm_hidden", &pp::Simulation::total_comm_hidden)
      .def_readonly("times", &pp::Simulation::times);

  py::class_<pp::AutoCandidate>(m, "AutoCandidate")
      .def_readonly("kind", &pp::AutoCandidate::kind)
      .def_readonly("possible", &pp::AutoCandidate::possible)
      .def_readonly("fits", &pp::AutoCandidate::fits)
      .def_readonly("makespan", &pp::AutoCandidate::makespan)
      .def_readonly("peak_activations", &pp::AutoCandidate::peak_activations)
      .def_readonly("note", &pp::AutoCandidate::note);
  py::class_<pp::AutoChoice>(m, "AutoChoice")
      .def_readonly("schedule", &pp::AutoChoice::schedule)
      .def_readonly("costs", &pp::AutoChoice::costs)
      .def_readonly("simulation", &pp::AutoChoice::simulation)
      .def_readonly("candidates", &pp::AutoChoice::candidates)
      .def_readonly("reason", &pp::AutoChoice::reason);

  m.def("make_schedule", [](const std::string& name, int ranks, int microbatches) {
    return pp::make_schedule(pp::parse_schedule_kind(name), {ranks, microbatches});
  }, "name"_a, "ranks"_a, "microbatches"_a);
  m.def("gpipe", &pp::gpipe, "ranks"_a, "microbatches"_a);
  m.def("one_f_one_b", &pp::one_f_one_b, "ranks"_a, "microbatches"_a);
  m.def("zb_h1", &pp::zb_h1, "ranks"_a, "microbatches"_a);
  m.def("dualpipe", &pp::dualpipe, "ranks"_a, "microbatches"_a);
  m.def("dualpipe_v", &pp::dualpipe_v, "ranks"_a, "microbatches"_a);
  m.def("validate", &pp::validate, "schedule"_a);
  // One cost per op kind, one per model stage, or one per (rank, local chunk):
  // pybind11 picks the overload from the shape of `costs`.
  m.def("simulate", py::overload_cast<const pp::Schedule&, const pp::Costs&>(&pp::simulate),
        "schedule"_a, "costs"_a);
  m.def("simulate",
        py::overload_cast<const pp::Schedule&, const std::vector<pp::Costs>&>(&pp::simulate),
        "schedule"_a, "costs"_a);
  m.def("simulate",
        py::overload_cast<const pp::Schedule&, const std::vector<std::vector<pp::Costs>>&>(
            &pp::simulate),
        "schedule"_a, "costs"_a);
  m.def("scale_costs", &pp::scale_costs, "schedule"_a, "per_stage"_a);
  m.def("choose_schedule", [](int ranks, int microbatches, const pp::Costs& per_stage, double memory_budget) {
    return pp::choose_schedule({ranks, microbatches, per_stage, memory_budget});
  }, "ranks"_a, "microbatches"_a, "per_stage"_a, "memory_budget"_a = 0.0);
  // marks: per rank, (start, end) pairs on the simulation's time axis.
  using Marks = std::vector<std::vector<std::pair<double, double>>>;
  m.def(
      "timeline_svg",
      [](const pp::Schedule& schedule, const pp::Simulation& simulation, const Marks& marks) {
        std::vector<std::vector<pp::OpTime>> m(marks.size());
        for (std::size_t r = 0; r < marks.size(); ++r)
          for (const auto& [start, end] : marks[r]) m[r].push_back({start, end});
        return pp::timeline_svg(schedule, simulation, m);
      },
      "schedule"_a, "simulation"_a, "marks"_a = Marks{});
}

}  // namespace epx::python
