#include <memory>
#include <vector>

#include <epx/comm.hpp>
#include <epx/kernels.hpp>

#include "python/bindings.hpp"
#include "python/torch_tensor.hpp"

namespace epx::python {

namespace py = pybind11;
using namespace py::literals;
using comm::Buffer;

namespace {

// Destroying a Buffer that spans nodes waits for the peers: without the GIL.
struct ReleaseGilDelete {
  void operator()(Buffer* b) const {
    if (Py_IsInitialized() && PyGILState_Check()) {
      py::gil_scoped_release unlocked;
      delete b;
    } else {
      delete b;
    }
  }
};
using BufferHolder = std::unique_ptr<Buffer, ReleaseGilDelete>;

// DeepEP passes FP8 input as a tuple (x, x_scales); epx takes x_scales= too.
// Either way it is dispatched as a comm::Fp8Tensor. torch 1.x has no float8
// dtype, so a uint8 x with scales is e4m3.
struct Payload {
  TorchArg x, scales;
  bool with_scales = false;
  // Calls f with the C++ payload: the Fp8Tensor when scales were given, else x.
  template <class F>
  auto apply(F&& f) const {
    return with_scales ? f(comm::Fp8Tensor{x.tensor, scales.tensor}) : f(x.tensor);
  }
};
Payload payload(const py::object& x, const py::object& x_scales) {
  py::object data = x, scales = x_scales;
  if (py::isinstance<py::tuple>(x)) {
    auto t = x.cast<py::tuple>();
    if (t.size() != 2) throw py::value_error("x: a tuple must be (x, x_scales)");
    data = t[0];
    scales = t[1];
  }
  Payload p;
  p.with_scales = !scales.is_none();
  p.scales = from_torch(scales, "x_scales");
  const bool one_byte = !data.is_none() && py::hasattr(data, "dtype") &&
                        std::string(py::str(data.attr("dtype"))) == "torch.uint8";
  p.x = from_torch(data, "x", one_byte && !scales.is_none() ? std::optional(DType::e4m3) : std::nullopt);
  return p;
}

comm::DispatchOptions dispatch_options(int expert_alignment, bool fp8, bool ue8m0) {
  comm::DispatchOptions o;
  o.fp8 = fp8;
  o.ue8m0 = ue8m0;
  o.expert_alignment = expert_alignment;
  return o;
}

comm::Layout as_layout(const py::object& layout) {
  // None: an empty layout, which dispatch rejects on every rank (a TypeError
  // here would leave the other ranks waiting in the call).
  return layout.is_none() ? comm::Layout{} : layout.cast<comm::Layout>();
}

// Calls a hook (waits on peers) without the GIL.
py::object wrap_hook(std::function<void()> hook) {
  if (!hook) return py::none();
  return py::cpp_function([hook = std::move(hook)] {
    py::gil_scoped_release unlocked;
    hook();
  });
}

}  // namespace

void register_comm(py::module_& m) {
  py::class_<comm::Handle>(m, "Handle", "Where every received row of a dispatch came from")
      .def_property_readonly("defined", &comm::Handle::defined)
      .def_property_readonly("num_tokens", &comm::Handle::num_tokens)
      .def_property_readonly("num_recv_tokens", &comm::Handle::num_recv_tokens);

  py::class_<comm::Layout>(m, "Layout", "Routing counts of one topk_idx (get_dispatch_layout)")
      .def_property_readonly("num_tokens_per_rank",
                             [](const comm::Layout& l) { return to_torch(l.num_tokens_per_rank); })
      .def_property_readonly("num_tokens_per_node",
                             [](const comm::Layout& l) { return to_torch(l.num_tokens_per_node); })
      // DeepEP's name for the same counts (an RDMA rank is a node there).
      .def_property_readonly("num_tokens_per_rdma_rank",
                             [](const comm::Layout& l) { return to_torch(l.num_tokens_per_node); })
      .def_property_readonly("num_tokens_per_expert",
                             [](const comm::Layout& l) { return to_torch(l.num_tokens_per_expert); })
      .def_property_readonly("is_token_in_rank",
                             [](const comm::Layout& l) { return to_torch(l.is_token_in_rank); })
      .def_readonly("num_experts", &comm::Layout::num_experts);

  py::class_<comm::DispatchResult>(m, "DispatchResult")
      .def_property_readonly("x", [](const comm::DispatchResult& r) { return to_torch(r.x); })
      .def_property_readonly("x_scales", [](const comm::DispatchResult& r) { return to_torch(r.x_scales); })
      .def_property_readonly("topk_idx", [](const comm::DispatchResult& r) { return to_torch(r.topk_idx); })
      .def_property_readonly("topk_weights",
                             [](const comm::DispatchResult& r) { return to_torch(r.topk_weights); })
      .def_readonly("num_recv_tokens_per_expert", &comm::DispatchResult::num_recv_tokens_per_expert)
      .def_readonly("handle", &comm::DispatchResult::handle);

  py::class_<comm::LowLatencyHandle>(m, "LowLatencyHandle")
      .def_property_readonly("defined", &comm::LowLatencyHandle::defined);

  py::class_<comm::LowLatencyDispatchResult>(m, "LowLatencyDispatchResult")
      .def_property_readonly("x", [](const comm::LowLatencyDispatchResult& r) { return to_torch(r.x); })
      .def_property_readonly("x_scales",
                             [](const comm::LowLatencyDispatchResult& r) { return to_torch(r.x_scales); })
      .def_property_readonly("count", [](const comm::LowLatencyDispatchResult& r) { return to_torch(r.count); })
      .def_readonly("handle", &comm::LowLatencyDispatchResult::handle)
      .def_property_readonly("hook", [](const comm::LowLatencyDispatchResult& r) { return wrap_hook(r.hook); });

  py::class_<comm::LowLatencyCombineResult>(m, "LowLatencyCombineResult")
      .def_property_readonly("x", [](const comm::LowLatencyCombineResult& r) { return to_torch(r.x); })
      .def_property_readonly("hook", [](const comm::LowLatencyCombineResult& r) { return wrap_hook(r.hook); });

  py::class_<Buffer, BufferHolder>(m, "Buffer", "Dispatch and combine over a Group (every call is collective)")
      .def(py::init([](Group& group, std::size_t num_bytes, bool low_latency, int max_tokens_per_rank,
                       int hidden, int num_experts, double timeout_s) {
             comm::BufferOptions o;
             o.num_bytes = num_bytes;
             o.low_latency = low_latency;
             o.max_tokens_per_rank = max_tokens_per_rank;
             o.hidden = hidden;
             o.num_experts = num_experts;
             o.timeout_s = timeout_s;
             py::gil_scoped_release unlocked;
             return BufferHolder(new Buffer(group, o));
           }),
           "group"_a, "num_bytes"_a = comm::BufferOptions{}.num_bytes, "low_latency"_a = false,
           "max_tokens_per_rank"_a = 0, "hidden"_a = 0, "num_experts"_a = 0,
           "timeout_s"_a = comm::BufferOptions{}.timeout_s,
           py::keep_alive<1, 2>())  // the group outlives the buffer
      .def(
          "get_dispatch_layout",
          [](Buffer& b, const py::object& topk_idx, int num_experts) {
            TorchArg idx = from_torch(topk_idx, "topk_idx");
            return collective({&idx}, [&] { return b.get_dispatch_layout(idx.tensor, num_experts); });
          },
          "topk_idx"_a, "num_experts"_a)
      // The cached form first: a Handle as second argument (DeepEP's
      // dispatch(x, handle=...)) selects it; anything else is the routed form.
      .def(
          "dispatch",
          [](Buffer& b, const py::object& x, const comm::Handle& handle, int expert_alignment, bool fp8,
             bool ue8m0, const py::object& x_scales) {
            Payload p = payload(x, x_scales);
            comm::DispatchOptions o = dispatch_options(expert_alignment, fp8, ue8m0);
            return collective({&p.x, &p.scales}, [&] {
              return p.apply([&](const auto& x) { return b.dispatch(x, handle, o); });
            });
          },
          "x"_a, "handle"_a, py::kw_only(), "expert_alignment"_a = 1, "fp8"_a = false, "ue8m0"_a = false,
          "x_scales"_a = py::none())
      .def(
          "dispatch",
          [](Buffer& b, const py::object& x, const py::object& topk_idx, const py::object& topk_weights,
             const py::object& layout, int expert_alignment, bool fp8, bool ue8m0, const py::object& x_scales) {
            Payload p = payload(x, x_scales);
            TorchArg idx = from_torch(topk_idx, "topk_idx"), w = from_torch(topk_weights, "topk_weights");
            comm::Layout l = as_layout(layout);
            comm::DispatchOptions o = dispatch_options(expert_alignment, fp8, ue8m0);
            return collective({&p.x, &p.scales, &idx, &w}, [&] {
              return p.apply(
                  [&](const auto& x) { return b.dispatch(x, idx.tensor, w.tensor, l, o); });
            });
          },
          "x"_a, "topk_idx"_a, "topk_weights"_a, "layout"_a, py::kw_only(), "expert_alignment"_a = 1,
          "fp8"_a = false, "ue8m0"_a = false, "x_scales"_a = py::none())
      .def(
          "combine",
          [](Buffer& b, const py::object& x, const comm::Handle& handle, bool partials_in_input_dtype) {
            TorchArg y = from_torch(x, "x");
            comm::CombineOptions o;
            o.partials_in_input_dtype = partials_in_input_dtype;
            Tensor out = collective({&y}, [&] { return b.combine(y.tensor, handle, o); });
            return to_torch(out);
          },
          "x"_a, "handle"_a, py::kw_only(), "partials_in_input_dtype"_a = false)
      .def(
          "combine_input",
          [](Buffer& b, const comm::Handle& handle, std::int64_t hidden, const py::object& dtype) {
            return to_torch(b.combine_input(handle, hidden, dtype_from_torch(dtype)));
          },
          "handle"_a, "hidden"_a, "dtype"_a)
      .def(
          "low_latency_dispatch",
          [](Buffer& b, const py::object& x, const py::object& topk_idx, bool use_fp8, bool use_ue8m0,
             bool return_recv_hook) {
            TorchArg xa = from_torch(x, "x"), idx = from_torch(topk_idx, "topk_idx");
            comm::LowLatencyOptions o;
            o.fp8 = use_fp8;
            o.ue8m0 = use_ue8m0;
            o.return_recv_hook = return_recv_hook;
            return collective({&xa, &idx}, [&] { return b.low_latency_dispatch(xa.tensor, idx.tensor, o); });
          },
          "x"_a, "topk_idx"_a, py::kw_only(), "use_fp8"_a = true, "use_ue8m0"_a = false,
          "return_recv_hook"_a = false)
      .def(
          "low_latency_combine",
          [](Buffer& b, const py::object& x, const py::object& topk_idx, const py::object& topk_weights,
             const comm::LowLatencyHandle& handle, bool return_recv_hook) {
            TorchArg y = from_torch(x, "x"), idx = from_torch(topk_idx, "topk_idx"),
                     w = from_torch(topk_weights, "topk_weights");
            comm::LowLatencyOptions o;
            o.return_recv_hook = return_recv_hook;
            return collective({&y, &idx, &w},
                              [&] { return b.low_latency_combine(y.tensor, idx.tensor, w.tensor, handle, o); });
          },
          "x"_a, "topk_idx"_a, "topk_weights"_a, "handle"_a, py::kw_only(), "return_recv_hook"_a = false)
      .def_static("low_latency_size_hint", &Buffer::low_latency_size_hint, "max_tokens_per_rank"_a,
                  "hidden"_a, "num_ranks"_a, "num_experts"_a)
      .def_property_readonly("capacity_bytes", &Buffer::capacity_bytes)
      .def_property_readonly("internode_bytes", &Buffer::internode_bytes)
      .def("transport_name", &Buffer::transport_name, "peer"_a);

  // FP8 helpers (epx::kernels), e.g. to dequantise what an fp8 dispatch received.
  m.def(
      "per_token_cast_to_fp8",
      [](const py::object& x, bool ue8m0) {
        TorchArg xa = from_torch(x, "x");
        auto [q, s] = collective({&xa}, [&] { return kernels::per_token_cast_to_fp8(xa.tensor, ue8m0); });
        return py::make_tuple(to_torch(q), to_torch(s));
      },
      "x"_a, "ue8m0"_a = false);
  m.def(
      "per_token_cast_back",
      [](const py::object& q, const py::object& scales, const py::object& dtype) {
        TorchArg qa = from_torch(q, "x", DType::e4m3), sa = from_torch(scales, "x_scales");
        DType out = dtype.is_none() ? DType::f32 : dtype_from_torch(dtype);
        return to_torch(collective({&qa, &sa}, [&] { return kernels::per_token_cast_back(qa.tensor, sa.tensor, out); }));
      },
      "x"_a, "x_scales"_a, "dtype"_a = py::none());

  // For the zero-copy tests: the address epx sees for a torch tensor argument.
  m.def("_data_address", [](const py::object& t) {
    TorchArg a = from_torch(t, "tensor");
    if (!a.problem.empty()) throw Error(ErrorCode::InvalidArgument, a.problem);
    return reinterpret_cast<std::uintptr_t>(a.tensor.raw());
  });
}

}  // namespace epx::python
