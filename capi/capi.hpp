// Shared pieces of the C ABI (include/epx/epx.h): the objects behind its
// opaque handles, the boundary that turns exceptions into status codes, and
// the conversions of tensors and versioned config structs.
#pragma once

#include <cstddef>
#include <cstring>
#include <functional>
#include <memory>
#include <string>

#include <epx/epx.h>
#include <epx/comm.hpp>
#include <epx/group.hpp>

#include "core/check.hpp"

// The C handles are pointers to these; each holds the C++ object (or the
// reference-counted part of one) it stands for.
struct epxGroup_s {
  epx::Group group;
};
struct epxBuffer_s {
  std::unique_ptr<epx::comm::Buffer> buffer;  // keeps its own copy of the Group
};
struct epxLayout_s {
  epx::comm::Layout layout;
};
struct epxDispatchResult_s {
  epx::comm::DispatchResult result;
  epx::Tensor num_recv_tokens_per_expert;  // result's vector as an i32 tensor, for the view
};
struct epxHandle_s {
  epx::comm::Handle handle;
};
struct epxLowLatencyResult_s {
  epx::comm::LowLatencyDispatchResult result;
};
struct epxLowLatencyHandle_s {
  epx::comm::LowLatencyHandle handle;
};
struct epxHook_s {
  std::function<void()> wait;  // finishes the call (and copies a combine's result out)
};

namespace epx::capi {

// Runs `body`, the whole of one C call. Every exception stops here: it sets
// this thread's last error and becomes the status. `call` names the function.
// A non-empty *problem (from to_tensor) replaces this rank's message of an
// InvalidArgument: it says what was wrong with the C struct, where epx saw
// only an undefined tensor.
epxResult_t guard(const char* call, const std::function<void()>& body,
                  const std::string* problem = nullptr) noexcept;

// Sets the last error and returns the status of `code` (for errors found
// without an exception, e.g. a NULL handle).
epxResult_t fail(epxResult_t code, const std::string& message) noexcept;

epxResult_t status_of(ErrorCode code) noexcept;
const char* last_error() noexcept;

// The tensor an epxTensor_t describes (a view of the caller's memory). A
// struct that describes no valid tensor (bad ndim, dtype or shape, NULL data
// with elements) gives an undefined Tensor, so that the collective call it
// goes into rejects it on every rank (no rank is left waiting); the reason
// is appended to *problem for this rank's message. NULL t: undefined, no problem.
Tensor to_tensor(const epxTensor_t* t, const char* name, std::string* problem);

// The C view of `t` (absent: data NULL, ndim 0).
epxTensor_t to_c(Tensor& t);

// Copies `from` into the caller's `out` after checking that out describes
// memory of from's dtype and shape (a local check: the collective part of the
// call is over).
void copy_out(const Tensor& from, const epxTensor_t* out, const char* call);

// Reads the caller's versioned config struct over `defaults` into *out (NULL
// gives the defaults). The struct must say a version this library knows and
// that version's size (a newer header's larger struct is refused rather than
// read in part). Returns "" or what is wrong, for the caller to poison its
// collective call with, like a bad tensor (to_tensor).
template <class C>
std::string read_config(const C* in, const C& defaults, const char* type, C* out) {
  *out = defaults;
  if (in == nullptr) return "";
  const char* hint = " (initialise it with its _INIT macro)";
  if (in->size < offsetof(C, version) + sizeof(in->version))
    return core::concat(type, ".size = ", in->size, ", expected sizeof(", type, ") = ", sizeof(C),
                        hint);
  if (in->version < 1 || in->version > EPX_C_API_VERSION)
    return core::concat(type, ".version = ", in->version, ", expected 1 to ", EPX_C_API_VERSION,
                        hint, "; a newer epx.h needs a newer libepx");
  // Version 1 is the whole struct today; later versions add fields at the
  // end, and this check becomes a table of sizes per version.
  if (in->size != sizeof(C))
    return core::concat(type, ".size = ", in->size, ", expected ", sizeof(C), " for version ",
                        in->version, hint);
  std::memcpy(static_cast<void*>(out), in, in->size);
  return "";
}

// Keeps the first problem of a call (the one this rank reports).
inline void note(std::string* problem, const std::string& why) {
  if (problem->empty()) *problem = why;
}

// The name and the _INIT defaults of each versioned config struct.
template <class C>
struct ConfigOf;
#define EPX_CAPI_CONFIG(C, INIT)                  \
  template <>                                     \
  struct ConfigOf<C> {                            \
    static constexpr const char* name = #C;       \
    static C defaults() noexcept { return INIT; } \
  }
EPX_CAPI_CONFIG(epxBufferConfig_t, EPX_BUFFER_CONFIG_INIT);
EPX_CAPI_CONFIG(epxDispatchConfig_t, EPX_DISPATCH_CONFIG_INIT);
EPX_CAPI_CONFIG(epxCombineConfig_t, EPX_COMBINE_CONFIG_INIT);
EPX_CAPI_CONFIG(epxLowLatencyConfig_t, EPX_LOW_LATENCY_CONFIG_INIT);
#undef EPX_CAPI_CONFIG

// The C inputs of one collective call, converted without throwing: what is
// wrong with a struct is noted (the first problem is this rank's message),
// and the call still goes to every rank with an input it rejects there, so
// that no rank is left waiting.
class Inputs {
 public:
  Tensor tensor(const epxTensor_t* t, const char* name) { return to_tensor(t, name, &problem_); }
  // The caller's config struct, or its defaults when NULL or bad.
  template <class C>
  C config(const C* in) {
    C out;
    note(&problem_, read_config(in, ConfigOf<C>::defaults(), ConfigOf<C>::name, &out));
    return out;
  }
  void note_problem(const std::string& why) { note(&problem_, why); }
  bool ok() const noexcept { return problem_.empty(); }
  // `main` if nothing was wrong, else undefined: rejected on every rank.
  Tensor checked(Tensor main) const { return ok() ? std::move(main) : Tensor(); }
  const std::string* problem() const noexcept { return &problem_; }

 private:
  std::string problem_;
};

// The FP8 fields that the dispatch and low-latency configs share, as C++ options.
template <class Options, class Config>
Options fp8_options(const Config& c) {
  Options o;
  o.fp8 = c.fp8 != 0;
  o.ue8m0 = c.ue8m0 != 0;
  return o;
}

// Runs the body of a collective C call with its Inputs (guard's boundary:
// an InvalidArgument reports this rank's noted problem).
template <class F>
epxResult_t with_inputs(const char* call, F&& body) noexcept {
  Inputs in;
  return guard(
      call, [&] { body(in); }, in.problem());
}

// Throws InvalidArgument naming `what` when p is NULL.
template <class P>
P* need(P* p, const char* call, const char* what) {
  EPX_CHECK(p != nullptr, InvalidArgument, call, ": ", what, " is NULL");
  return p;
}

}  // namespace epx::capi
