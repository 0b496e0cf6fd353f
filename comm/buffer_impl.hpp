// The state of a Buffer, shared by its call implementations
// (layout.cpp, dispatch.cpp, combine.cpp).
#pragma once

#include <epx/comm.hpp>
#include <epx/error.hpp>

#include "comm/arena.hpp"
#include "comm/control.hpp"
#include "comm/handle.hpp"
#include "comm/transport/fabric.hpp"

namespace epx::comm {

struct Buffer::Impl {
  Impl(Group& g, const BufferOptions& o);

  Group& group;
  BufferOptions options;
  std::uint64_t id;
  transport::Fabric fabric;
  Control control;
  Arena arena;

  core::Deadline deadline() const { return core::Deadline(control.timeout_s()); }

  // Allocates `need` bytes of receive space for this call, growing the space
  // collectively if any rank lacks room. `out` are this rank's messages of
  // `round` (v[0], v[1] = region, offset of the block, filled here); returns
  // the messages received from all ranks, with regrown blocks' coordinates.
  // Also agrees on input errors (own_error) before anything else happens.
  struct Reserved {
    Arena::Block block;
    std::vector<Message> in;
  };
  Reserved reserve(Round round, std::size_t need, std::vector<Message> out,
                   const std::string& own_error, const core::Deadline& deadline);
};

// Message fields used by reserve(): where the receiver's block is.
constexpr int kMsgRegion = 0;
constexpr int kMsgOffset = 1;
constexpr int kMsgGrow = 2;

// Runs `validate`, returning its epx::Error message (or "" if it passed).
template <class F>
std::string validation_error(F&& validate) {
  try {
    validate();
  } catch (const epx::Error& e) {
    return e.what();
  }
  return {};
}

}  // namespace epx::comm
