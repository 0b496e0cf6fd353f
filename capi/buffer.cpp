// The C ABI of epx::comm::Buffer in normal mode: construction, layout,
// dispatch (fresh and cached) and combine.
#include <algorithm>
#include <cstdint>

#include "capi/capi.hpp"

using epx::capi::guard;
using epx::capi::need;
using epx::capi::to_c;
using epx::capi::to_tensor;

namespace {

// The options of a dispatch (a bad config struct is noted in *problem).
epx::comm::DispatchOptions dispatch_options(const epxDispatchConfig_t* config,
                                            const epx::Tensor& x_scales, std::string* problem) {
  const epxDispatchConfig_t defaults = EPX_DISPATCH_CONFIG_INIT;
  epxDispatchConfig_t c;
  epx::capi::note(problem, epx::capi::read_config(config, defaults, "epxDispatchConfig_t", &c));
  epx::comm::DispatchOptions o;
  o.fp8 = c.fp8 != 0;
  o.ue8m0 = c.ue8m0 != 0;
  o.expert_alignment = c.expert_alignment;
  o.x_scales = x_scales;
  return o;
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
  std::string problem;
  return guard(
      "epxBufferCreate",
      [&] {
        need(group, "epxBufferCreate", "group");
        const epxBufferConfig_t defaults = EPX_BUFFER_CONFIG_INIT;
        epxBufferConfig_t c;
        epx::capi::note(&problem,
                        epx::capi::read_config(config, defaults, "epxBufferConfig_t", &c));
        epx::comm::BufferOptions o;
        o.num_bytes = c.num_bytes;
        o.timeout_s = c.timeout_s;
        o.low_latency = c.low_latency != 0;
        o.max_tokens_per_rank = c.max_tokens_per_rank;
        o.hidden = c.hidden;
        o.num_experts = c.num_experts;
        // A bad struct on one rank must fail every rank: options the Buffer
        // rejects in its agreement (this rank's message says why).
        if (!problem.empty()) o.num_bytes = SIZE_MAX;
        auto b = std::make_unique<epxBuffer_s>();
        b->buffer = std::make_unique<epx::comm::Buffer>(group->group, o);
        *need(buffer, "epxBufferCreate", "buffer (the output pointer)") = b.release();
      },
      &problem);
}

epxResult_t epxBufferDestroy(epxBuffer_t buffer) {
  return guard("epxBufferDestroy", [&] { delete buffer; });
}

epxResult_t epxGetDispatchLayout(epxBuffer_t buffer, const epxTensor_t* topk_idx, int num_experts,
                                 epxLayout_t* layout) {
  std::string problem;
  return guard(
      "epxGetDispatchLayout",
      [&] {
        need(buffer, "epxGetDispatchLayout", "buffer");
        auto l = std::make_unique<epxLayout_s>();
        l->layout = buffer->buffer->get_dispatch_layout(to_tensor(topk_idx, "topk_idx", &problem),
                                                        num_experts);
        *need(layout, "epxGetDispatchLayout", "layout (the output pointer)") = l.release();
      },
      &problem);
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
  std::string problem;
  const char* call = "epxDispatch";
  return guard(
      call,
      [&] {
        need(buffer, call, "buffer");
        // A NULL layout is bad input like a bad tensor: an empty Layout,
        // which dispatch rejects on every rank.
        const epx::comm::Layout empty;
        if (layout == nullptr) epx::capi::note(&problem, "layout is NULL");
        const epx::comm::Layout& l = layout ? layout->layout : empty;
        epx::Tensor xt = to_tensor(x, "x", &problem);
        const epx::Tensor st = to_tensor(x_scales, "x_scales", &problem);
        const epx::Tensor it = to_tensor(topk_idx, "topk_idx", &problem);
        const epx::Tensor wt = to_tensor(topk_weights, "topk_weights", &problem);
        const epx::comm::DispatchOptions o = dispatch_options(config, st, &problem);
        // Any problem, also of an optional input, fails the call on every rank.
        if (!problem.empty()) xt = epx::Tensor();
        store(result, buffer->buffer->dispatch(xt, it, wt, l, o), call);
      },
      &problem);
}

epxResult_t epxDispatchCached(epxBuffer_t buffer, const epxTensor_t* x, const epxTensor_t* x_scales,
                              epxHandle_t handle, const epxDispatchConfig_t* config,
                              epxDispatchResult_t* result) {
  std::string problem;
  const char* call = "epxDispatchCached";
  return guard(
      call,
      [&] {
        need(buffer, call, "buffer");
        if (handle == nullptr) epx::capi::note(&problem, "handle is NULL");
        const epx::comm::Handle h = handle ? handle->handle : epx::comm::Handle();
        epx::Tensor xt = to_tensor(x, "x", &problem);
        const epx::Tensor st = to_tensor(x_scales, "x_scales", &problem);
        const epx::comm::DispatchOptions o = dispatch_options(config, st, &problem);
        // Any problem, also of an optional input, fails the call on every rank.
        if (!problem.empty()) xt = epx::Tensor();
        store(result, buffer->buffer->dispatch(xt, h, o), call);
      },
      &problem);
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
  std::string problem;
  const char* call = "epxCombine";
  return guard(
      call,
      [&] {
        need(buffer, call, "buffer");
        if (handle == nullptr) epx::capi::note(&problem, "handle is NULL");
        const epx::comm::Handle h = handle ? handle->handle : epx::comm::Handle();
        const epxCombineConfig_t defaults = EPX_COMBINE_CONFIG_INIT;
        epxCombineConfig_t c;
        epx::capi::note(&problem,
                        epx::capi::read_config(config, defaults, "epxCombineConfig_t", &c));
        epx::Tensor yt = to_tensor(y, "y", &problem);
        if (!problem.empty()) yt = epx::Tensor();  // rejected on every rank
        epx::comm::CombineOptions o;
        o.partials_in_input_dtype = c.partials_in_input_dtype != 0;
        const epx::Tensor sum = buffer->buffer->combine(yt, h, o);
        epx::capi::copy_out(sum, out, call);
      },
      &problem);
}

}  // extern "C"
