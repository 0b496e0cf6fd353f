// The state of a Buffer, shared by its call implementations
// (buffer.cpp, dispatch.cpp, combine.cpp).
#pragma once

#include <functional>
#include <new>

#include <epx/comm.hpp>
#include <epx/error.hpp>

#include "comm/arena.hpp"
#include "comm/control.hpp"
#include "comm/handle.hpp"
#include "comm/low_latency.hpp"
#include "comm/topology.hpp"
#include "comm/transport/fabric.hpp"
#include "core/check.hpp"

namespace epx::comm {

struct Buffer::Impl {
  Impl(const Group& g, const BufferOptions& o, double timeout_s);

  Group group;  // a handle: the caller's Group may move or go away
  NodeTopology topo;
  BufferOptions options;
  std::uint64_t id;
  transport::Fabric fabric;
  Control control;
  Arena arena;
  std::shared_ptr<LowLatencyState> ll;  // with options.low_latency

  core::Deadline deadline() const { return core::Deadline(control.timeout_s()); }

  // Runs one call's body. An error that not every rank raised together (a
  // timeout, a peer's failure, an allocation failure on one rank) leaves the
  // peers waiting: abort the group so that they fail fast too.
  template <class F>
  auto guarded(F&& body) -> decltype(body()) {
    try {
      return body();
    } catch (const AgreedError&) {
      throw;
    } catch (const Error& e) {
      if (e.code() != ErrorCode::Timeout && e.code() != ErrorCode::PeerFailure)
        fabric.abort(core::concat(op_name(control.op()), " #", control.seq(), ": ", e.what()));
      // Not agreed (a drift of the calls, a failure on this rank alone): the
      // group is failed now, and the error says so.
      core::rethrow_poisoned(std::current_exception());
    } catch (const std::exception& e) {
      fabric.abort(core::concat(op_name(control.op()), " #", control.seq(), ": ", e.what()));
      throw;
    }
  }

  // Allocates `need` bytes of receive space for this call, growing the space
  // collectively if any rank lacks room. `out` are this rank's messages of
  // `round` (Message::block = region, offset of the block, growth flag: filled here);
  // returns the messages received from all ranks, with regrown blocks'
  // coordinates. Agrees on input errors (own_error) first, then runs `check`
  // on the messages (it throws AgreedError when ranks disagree), then grows.
  struct Reserved {
    Arena::Block block;
    std::vector<Message> in;
  };
  Reserved reserve(Round round, std::size_t need, std::vector<Message> out,
                   const std::string& own_error, const core::Deadline& deadline,
                   const std::function<void(const std::vector<Message>&)>& check = {});
};

// Runs `validate`, returning its error message (or "" if it passed). Any
// exception becomes a verdict that the other ranks learn, so none waits alone.
template <class F>
std::string validation_error(F&& validate) {
  try {
    validate();
  } catch (const epx::Error& e) {
    return e.what();
  } catch (const std::exception& e) {
    return core::concat(core::rank_prefix(), " ", e.what());
  }
  return {};
}

}  // namespace epx::comm
