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

Error::Error(ErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}

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

void raise(ErrorCode code, const std::string& what, const char* file, int line) {
  std::string msg = rank_prefix();
  if (!msg.empty()) msg += ' ';
  msg += what;
  msg += concat(" (", file, ":", line, ")");
  throw Error(code, msg);
}

}  // namespace core
}  // namespace epx
