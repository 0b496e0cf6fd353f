// The C ABI of epx::comm::Buffer in normal mode: construction, layout,
// dispatch (fresh and cached) and combine.
#include <algorithm>
#include <cstdint>

#include "capi/capi.hpp"

using namespace epx::capi;  // the C ABI's helpers (capi/capi.hpp)

namespace {

epx::comm::DispatchOptions dispatch_options(const epxDispatchConfig_t& c) {
  auto o = fp8_options<epx::comm::DispatchOptions>(c);
  o.expert_alignment = c.expert_alignment;
  return o;
}

// The payload as the caller gave it: x, with x_scales (an Fp8Tensor) when not NULL.
struct Payload {
  epx::Tensor x, scales;
  bool with_scales;
  // Calls f with the C++ payload, once every input was read: any problem,
  // also of an optional input, makes x undefined, rejected on every rank.
  template <class F>
  epx::comm::DispatchResult apply(const Inputs& in, F&& f) const {
    const epx::Tensor xt = in.checked(x);
    return with_scales ? f(epx::comm::Fp8Tensor{xt, scales}) : f(xt);
  }
};

Payload payload(Inputs& in, const epxTensor_t* x, const epxTensor_t* x_scales) {
  return Payload{in.tensor(x, "x"), in.tensor(x_scales, "x_scales"), x_scales != nullptr};
}

// The result object: the C++ result plus num_recv_tokens_per_expert as a
// tensor (a C view needs memory that lives as long as the result).
epxDispatchResult_t make_result(epx::comm::DispatchResult r) {
  auto out = std::make_unique<epxDispatchResult_s>();
  const auto& counts = r.num_recv_tokens_per_expert;
  out->num_recv_tokens_per_expert =
      epx::Tensor::empty({static_cast<std::int64_t>(counts.size())}, epx::DType::i32);
  std::copy(counts.begin(), counts.end(), out->num_recv_tokens_per_expert.data<std::int32_t>());
  out->result = std::move(r);
  return out.release();
}

// Stores a result, or drops it (after the collective call, so no rank waits)
// and reports the NULL output pointer.
void store(epxDispatchResult_t* result, epx::comm::DispatchResult r, const char* call) {
  auto owned = std::unique_ptr<epxDispatchResult_s>(make_result(std::move(r)));
  *need(result, call, "result (the output pointer)") = owned.release();
}

}  // namespace

extern "C" {

epxResult_t epxBufferCreate(epxGroup_t group, const epxBufferConfig_t* config,
                            epxBuffer_t* buffer) {
  return with_inputs("epxBufferCreate", [&](Inputs& in) {
    need(group, "epxBufferCreate", "group");
    const epxBufferConfig_t c = in.config(config);
    epx::comm::BufferOptions o;
    o.num_bytes = c.num_bytes;
    o.timeout_s = c.timeout_s;
    o.low_latency = c.low_latency != 0;
    o.max_tokens_per_rank = c.max_tokens_per_rank;
    o.hidden = c.hidden;
    o.num_experts = c.num_experts;
    // A bad struct on one rank must fail every rank: options the Buffer
    // rejects in its agreement (this rank's message says why).
    if (!in.ok()) o.num_bytes = SIZE_MAX;
    auto b = std::make_unique<epxBuffer_s>();
    b->buffer = std::make_unique<epx::comm::Buffer>(group->group, o);
    *need(buffer, "epxBufferCreate", "buffer (the output pointer)") = b.release();
  });
}

epxResult_t epxBufferDestroy(epxBuffer_t buffer) {
  return guard("epxBufferDestroy", [&] { delete buffer; });
}

epxResult_t epxGetDispatchLayout(epxBuffer_t buffer, const epxTensor_t* topk_idx, int num_experts,
                                 epxLayout_t* layout) {
  return with_inputs("epxGetDispatchLayout", [&](Inputs& in) {
    need(buffer, "epxGetDispatchLayout", "buffer");
    auto l = std::make_unique<epxLayout_s>();
    l->layout = buffer->buffer->get_dispatch_layout(in.tensor(topk_idx, "topk_idx"), num_experts);
    *need(layout, "epxGetDispatchLayout", "layout (the output pointer)") = l.release();
  });
}

epxResult_t epxLayoutGetOutputs(epxLayout_t layout, epxLayoutOutputs_t* outputs) {
  return guard("epxLayoutGetOutputs", [&] {
    need(layout, "epxLayoutGetOutputs", "layout");
    need(outputs, "epxLayoutGetOutputs", "outputs");
    epx::comm::Layout& l = layout->layout;
    *outputs = {to_c(l.num_tokens_per_rank), to_c(l.num_tokens_per_node),
                to_c(l.num_tokens_per_expert), to_c(l.is_token_in_rank)};
  });
}

epxResult_t epxLayoutDestroy(epxLayout_t layout) {
  return guard("epxLayoutDestroy", [&] { delete layout; });
}

epxResult_t epxDispatch(epxBuffer_t buffer, const epxTensor_t* x, const epxTensor_t* x_scales,
                        const epxTensor_t* topk_idx, const epxTensor_t* topk_weights,
                        epxLayout_t layout, const epxDispatchConfig_t* config,
                        epxDispatchResult_t* result) {
  const char* call = "epxDispatch";
  return with_inputs(call, [&](Inputs& in) {
    need(buffer, call, "buffer");
    // A NULL layout is bad input like a bad tensor: an empty Layout, which
    // dispatch rejects on every rank.
    const epx::comm::Layout empty;
    if (layout == nullptr) in.note_problem("layout is NULL");
    const epx::comm::Layout& l = layout ? layout->layout : empty;
    const Payload p = payload(in, x, x_scales);
    const epx::Tensor it = in.tensor(topk_idx, "topk_idx");
    const epx::Tensor wt = in.tensor(topk_weights, "topk_weights");
    const epx::comm::DispatchOptions o = dispatch_options(in.config(config));
    store(result,
          p.apply(in, [&](const auto& xp) { return buffer->buffer->dispatch(xp, it, wt, l, o); }),
          call);
  });
}

epxResult_t epxDispatchCached(epxBuffer_t buffer, const epxTensor_t* x, const epxTensor_t* x_scales,
                              epxHandle_t handle, const epxDispatchConfig_t* config,
                              epxDispatchResult_t* result) {
  const char* call = "epxDispatchCached";
  return with_inputs(call, [&](Inputs& in) {
    need(buffer, call, "buffer");
    if (handle == nullptr) in.note_problem("handle is NULL");
    const epx::comm::Handle h = handle ? handle->handle : epx::comm::Handle();
    const Payload p = payload(in, x, x_scales);
    const epx::comm::DispatchOptions o = dispatch_options(in.config(config));
    store(result, p.apply(in, [&](const auto& xp) { return buffer->buffer->dispatch(xp, h, o); }),
          call);
  });
}

epxResult_t epxDispatchResultGetOutputs(epxDispatchResult_t result, epxDispatchOutputs_t* outputs) {
  return guard("epxDispatchResultGetOutputs", [&] {
    need(result, "epxDispatchResultGetOutputs", "result");
    need(outputs, "epxDispatchResultGetOutputs", "outputs");
    epx::comm::DispatchResult& r = result->result;
    *outputs = {to_c(r.x), to_c(r.x_scales), to_c(r.topk_idx), to_c(r.topk_weights),
                to_c(result->num_recv_tokens_per_expert)};
  });
}

epxResult_t epxDispatchResultGetHandle(epxDispatchResult_t result, epxHandle_t* handle) {
  return guard("epxDispatchResultGetHandle", [&] {
    need(result, "epxDispatchResultGetHandle", "result");
    *need(handle, "epxDispatchResultGetHandle", "handle") = new epxHandle_s{result->result.handle};
  });
}

epxResult_t epxDispatchResultDestroy(epxDispatchResult_t result) {
  return guard("epxDispatchResultDestroy", [&] { delete result; });
}

epxResult_t epxHandleGetCounts(epxHandle_t handle, int64_t* num_tokens, int64_t* num_recv_tokens) {
  return guard("epxHandleGetCounts", [&] {
    need(handle, "epxHandleGetCounts", "handle");
    if (num_tokens) *num_tokens = handle->handle.num_tokens();
    if (num_recv_tokens) *num_recv_tokens = handle->handle.num_recv_tokens();
  });
}

epxResult_t epxHandleDestroy(epxHandle_t handle) {
  return guard("epxHandleDestroy", [&] { delete handle; });
}

epxResult_t epxCombine(epxBuffer_t buffer, const epxTensor_t* y, epxHandle_t handle,
                       const epxCombineConfig_t* config, const epxTensor_t* out) {
  const char* call = "epxCombine";
  return with_inputs(call, [&](Inputs& in) {
    need(buffer, call, "buffer");
    if (handle == nullptr) in.note_problem("handle is NULL");
    const epx::comm::Handle h = handle ? handle->handle : epx::comm::Handle();
    const epxCombineConfig_t c = in.config(config);
    const epx::Tensor yt = in.tensor(y, "y");
    epx::comm::CombineOptions o;
    o.partials_in_input_dtype = c.partials_in_input_dtype != 0;
    const epx::Tensor sum = buffer->buffer->combine(in.checked(yt), h, o);
    epx::capi::copy_out(sum, out, call);
  });
}

}  // extern "C"
