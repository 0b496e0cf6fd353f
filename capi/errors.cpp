// The C ABI's error side: the status codes, the thread's last error, and the
// boundary (guard) where every C++ exception ends.
#include <new>

#include "capi/capi.hpp"

namespace epx::capi {
namespace {
// One per thread, as NCCL's ncclGetLastError: a failing call on one thread
// never overwrites the message another thread is reading.
thread_local std::string t_last_error;

// "[rank r/R] call: text", or "call: text" before any Group exists.
std::string message(const char* call, const std::string& text) {
  std::string prefix = core::rank_prefix();
  return core::concat(prefix, prefix.empty() ? "" : " ", call, ": ", text);
}
}  // namespace

const char* last_error() noexcept {
  return t_last_error.c_str();
}

epxResult_t fail(epxResult_t code, const std::string& message) noexcept {
  try {
    t_last_error = message;
  } catch (...) {
    t_last_error.clear();  // no memory for the message; the code still says what failed
  }
  return code;
}

epxResult_t status_of(ErrorCode code) noexcept {
  switch (code) {
    case ErrorCode::InvalidArgument:
      return epxInvalidArgument;
    case ErrorCode::OutOfMemory:
      return epxOutOfMemory;
    case ErrorCode::Timeout:
      return epxTimeout;
    case ErrorCode::PeerFailure:
      return epxPeerFailure;
    case ErrorCode::Unsupported:
      return epxUnsupported;
    case ErrorCode::Internal:
      return epxInternalError;
  }
  return epxInternalError;
}

epxResult_t guard(const char* call, const std::function<void()>& body,
                  const std::string* problem) noexcept {
  try {
    body();
    return epxSuccess;
  } catch (const Error& e) {
    if (e.code() == ErrorCode::InvalidArgument && problem != nullptr && !problem->empty())
      return fail(epxInvalidArgument, message(call, *problem));
    return fail(status_of(e.code()), e.what());
  } catch (const std::bad_alloc&) {
    return fail(epxOutOfMemory, message(call, "out of memory"));
  } catch (const std::exception& e) {
    return fail(epxInternalError,
                message(call, core::concat("unexpected error (please report): ", e.what())));
  } catch (...) {
    return fail(epxInternalError, message(call, "unexpected non-standard exception"));
  }
}

}  // namespace epx::capi

extern "C" {

const char* epxGetErrorString(epxResult_t result) {
  switch (result) {
    case epxSuccess:
      return "epxSuccess";
    case epxInvalidArgument:
      return "epxInvalidArgument";
    case epxOutOfMemory:
      return "epxOutOfMemory";
    case epxTimeout:
      return "epxTimeout";
    case epxPeerFailure:
      return "epxPeerFailure";
    case epxUnsupported:
      return "epxUnsupported";
    case epxInternalError:
      return "epxInternalError";
    case epxNumResults:
      break;
  }
  return "unknown epxResult_t";
}

const char* epxGetLastError(void) {
  return epx::capi::last_error();
}

epxResult_t epxGetVersion(int* major, int* minor, int* patch) {
  return epx::capi::guard("epxGetVersion", [&] {
    epx::capi::need(major, "epxGetVersion", "major");
    epx::capi::need(minor, "epxGetVersion", "minor");
    epx::capi::need(patch, "epxGetVersion", "patch");
    *major = EPX_VERSION_MAJOR;
    *minor = EPX_VERSION_MINOR;
    *patch = EPX_VERSION_PATCH;
  });
}

}  // extern "C"
