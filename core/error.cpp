#include <mutex>

#include "core/check.hpp"

namespace epx {

const char* to_string(ErrorCode code) noexcept {
  switch (code) {
    case ErrorCode::InvalidArgument: return "InvalidArgument";
    case ErrorCode::OutOfMemory: return "OutOfMemory";
    case ErrorCode::Timeout: return "Timeout";
    case ErrorCode::PeerFailure: return "PeerFailure";
    case ErrorCode::Unsupported: return "Unsupported";
    case ErrorCode::Internal: return "Internal";
  }
  return "Unknown";
}

Error::Error(ErrorCode code, const std::string& message)
    : Error(code, message, code == ErrorCode::Timeout || code == ErrorCode::PeerFailure) {}

Error::Error(ErrorCode code, const std::string& message, bool poisoned)
    : std::runtime_error(message), code_(code), poisoned_(poisoned) {}

namespace core {
namespace {
std::mutex g_prefix_mutex;
std::string g_prefix;
}  // namespace

std::string rank_prefix() {
  std::lock_guard<std::mutex> lock(g_prefix_mutex);
  return g_prefix;
}

void set_rank_prefix(std::string prefix) {
  std::lock_guard<std::mutex> lock(g_prefix_mutex);
  g_prefix = std::move(prefix);
}

void rethrow_poisoned(const std::exception_ptr& error) {
  try {
    std::rethrow_exception(error);
  } catch (const Error& e) {
    throw Error(e.code(), e.what(), true);
  }
}

void raise(ErrorCode code, const std::string& what, const char* file, int line) {
  std::string msg = rank_prefix();
  if (!msg.empty()) msg += ' ';
  msg += what;
  msg += concat(" (", file, ":", line, ")");
  throw Error(code, msg);
}

}  // namespace core
}  // namespace epx
