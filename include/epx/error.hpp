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
  // Poisoned as the code says by default: Timeout and PeerFailure are, the
  // others are not (see poisoned()).
  Error(ErrorCode code, const std::string& message);
  Error(ErrorCode code, const std::string& message, bool poisoned);
  ErrorCode code() const noexcept { return code_; }

  // Whether the object that raised this error (a Buffer, an Executor, a
  // LoadTracker: and, for comm, the Group under it) can no longer be used.
  // true: a peer failed or timed out, the ranks' calls drifted apart, or the
  // call failed on this rank alone; the group was aborted so that every rank
  // fails fast, and the objects on it must be rebuilt (on a new Group).
  // false: every rank agreed on the error before any data moved (bad input),
  // and the object works as before.
  bool poisoned() const noexcept { return poisoned_; }

 private:
  ErrorCode code_;
  bool poisoned_;
};

}  // namespace epx
