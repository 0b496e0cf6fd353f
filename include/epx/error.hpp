// epx errors: one exception type with a code, and a message that names the
// operation, the argument, the received and expected value, and the rank.
#pragma once

#include <stdexcept>
#include <string>

#include <epx/config.hpp>

namespace epx {

enum class ErrorCode {
  InvalidArgument,  // bad input; raised on every rank of the call, before any data moves
  OutOfMemory,      // an allocation or a shared region could not be made
  Timeout,          // a wait on a peer passed its deadline (the message names peer and phase)
  PeerFailure,      // another rank failed or aborted the group
  Unsupported,      // this build or transport lacks a capability the call needs
  Internal,         // a bug in epx: please report it with the message
};

EPX_API const char* to_string(ErrorCode code) noexcept;

class EPX_API Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message);
  ErrorCode code() const noexcept { return code_; }

 private:
  ErrorCode code_;
};

}  // namespace epx
