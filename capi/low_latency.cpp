// The C ABI of the low-latency calls and of the hooks that finish them.
#include "capi/capi.hpp"

using namespace epx::capi;  // the C ABI's helpers (capi/capi.hpp)

namespace {

epx::comm::LowLatencyOptions ll_options(const epxLowLatencyConfig_t& c) {
  auto o = fp8_options<epx::comm::LowLatencyOptions>(c);
  o.return_recv_hook = c.return_recv_hook != 0;
  return o;
}

// Hands out the hook of a call made with return_recv_hook (else *hook = NULL).
// After the collective part, so a NULL pointer fails only this rank; the
// hook is then dropped unwaited, which the next calls report.
void store_hook(std::function<void()> wait, epxHook_t* hook, const char* call) {
  if (!wait) {
    if (hook) *hook = nullptr;
    return;
  }
  auto h = std::make_unique<epxHook_s>(epxHook_s{std::move(wait)});
  *need(hook, call, "hook (the output pointer; return_recv_hook is set)") = h.release();
}

}  // namespace

extern "C" {

epxResult_t epxLowLatencyDispatch(epxBuffer_t buffer, const epxTensor_t* x,
                                  const epxTensor_t* topk_idx, const epxLowLatencyConfig_t* config,
                                  epxLowLatencyResult_t* result, epxHook_t* hook) {
  const char* call = "epxLowLatencyDispatch";
  if (hook) *hook = nullptr;
  return with_inputs(call, [&](Inputs& in) {
    need(buffer, call, "buffer");
    const epx::comm::LowLatencyOptions o = ll_options(in.config(config));
    const epx::Tensor xt = in.tensor(x, "x");
    const epx::Tensor it = in.tensor(topk_idx, "topk_idx");
    auto r = std::make_unique<epxLowLatencyResult_s>();
    r->result = buffer->buffer->low_latency_dispatch(in.checked(xt), it, o);
    std::function<void()> wait = std::move(r->result.hook);
    need(result, call, "result (the output pointer)");
    store_hook(std::move(wait), hook, call);
    *result = r.release();
  });
}

epxResult_t epxLowLatencyResultGetOutputs(epxLowLatencyResult_t result,
                                          epxLowLatencyOutputs_t* outputs) {
  return guard("epxLowLatencyResultGetOutputs", [&] {
    need(result, "epxLowLatencyResultGetOutputs", "result");
    need(outputs, "epxLowLatencyResultGetOutputs", "outputs");
    epx::comm::LowLatencyDispatchResult& r = result->result;
    *outputs = {to_c(r.x), to_c(r.x_scales), to_c(r.count)};
  });
}

epxResult_t epxLowLatencyResultGetHandle(epxLowLatencyResult_t result,
                                         epxLowLatencyHandle_t* handle) {
  return guard("epxLowLatencyResultGetHandle", [&] {
    need(result, "epxLowLatencyResultGetHandle", "result");
    *need(handle, "epxLowLatencyResultGetHandle", "handle") =
        new epxLowLatencyHandle_s{result->result.handle};
  });
}

epxResult_t epxLowLatencyResultDestroy(epxLowLatencyResult_t result) {
  return guard("epxLowLatencyResultDestroy", [&] { delete result; });
}

epxResult_t epxLowLatencyHandleDestroy(epxLowLatencyHandle_t handle) {
  return guard("epxLowLatencyHandleDestroy", [&] { delete handle; });
}

epxResult_t epxLowLatencyCombine(epxBuffer_t buffer, const epxTensor_t* y,
                                 const epxTensor_t* topk_idx, const epxTensor_t* topk_weights,
                                 epxLowLatencyHandle_t handle, const epxLowLatencyConfig_t* config,
                                 const epxTensor_t* out, epxHook_t* hook) {
  const char* call = "epxLowLatencyCombine";
  if (hook) *hook = nullptr;
  return with_inputs(call, [&](Inputs& in) {
    need(buffer, call, "buffer");
    const epx::comm::LowLatencyOptions o = ll_options(in.config(config));
    if (handle == nullptr) in.note_problem("handle is NULL");
    const epx::comm::LowLatencyHandle h = handle ? handle->handle : epx::comm::LowLatencyHandle();
    const epx::Tensor yt = in.tensor(y, "y");
    const epx::Tensor it = in.tensor(topk_idx, "topk_idx");
    const epx::Tensor wt = in.tensor(topk_weights, "topk_weights");
    epx::comm::LowLatencyCombineResult r =
        buffer->buffer->low_latency_combine(in.checked(yt), it, wt, h, o);
    if (!r.hook) {
      epx::capi::copy_out(r.x, out, call);
      return;
    }
    // The sum lands in r.x when the hook runs; the copy into the caller's
    // out follows it. out is read now: the caller's struct need not outlive
    // this call, only its memory.
    EPX_CHECK(out != nullptr, InvalidArgument, call, ": out is NULL");
    const epxTensor_t out_copy = *out;
    store_hook(
        [wait = std::move(r.hook), sum = r.x, out_copy]() {
          wait();
          epx::capi::copy_out(sum, &out_copy, "epxHookWait");
        },
        hook, call);
  });
}

epxResult_t epxHookWait(epxHook_t hook) {
  std::unique_ptr<epxHook_s> owned(hook);  // destroyed also when the wait fails
  return guard("epxHookWait", [&] { need(hook, "epxHookWait", "hook")->wait(); });
}

epxResult_t epxHookDestroy(epxHook_t hook) {
  return guard("epxHookDestroy", [&] { delete hook; });
}

}  // extern "C"
