// The control plane of the protocol: small fixed-size messages and signal
// slots in one region per rank, exchanged all-to-all once or twice per call.
// Messages also carry each rank's verdict on its inputs, so that one rank's
// bad input stops every rank before any payload moves. What each message
// holds, per op and round: control_messages.hpp.
//
// Slot reuse: every call consists of all-to-all rounds in which each rank
// sends before it reads, so a rank can be at most one call ahead of any peer.
// Alternating two banks by call parity therefore never overwrites a message
// that a peer has not read yet.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "comm/control_messages.hpp"
#include "comm/topology.hpp"
#include "comm/transport/fabric.hpp"
#include "core/check.hpp"

namespace epx::comm {

// An error that every rank of the call raises together, from the same shared
// messages (bad input on some rank, or arguments that differ between ranks):
// the group stays usable. Any other error in a call aborts the group.
class AgreedError : public Error {
 public:
  explicit AgreedError(const std::string& message) : Error(ErrorCode::InvalidArgument, message) {}
};

// EPX_CHECK_AGREED(cond, parts...): for checks that every rank evaluates on
// the same shared messages (so all throw together).
#define EPX_CHECK_AGREED(cond, ...)                                                         \
  do {                                                                                      \
    if (!(cond))                                                                            \
      throw ::epx::comm::AgreedError(::epx::core::concat(::epx::core::rank_prefix(), " ",   \
                                                         __VA_ARGS__, " (", __FILE__, ":", \
                                                         __LINE__, ")"));                   \
  } while (0)

enum class Op : std::uint32_t {
  Layout = 1,
  Dispatch = 2,
  CachedDispatch = 3,
  Combine = 4,
  LowLatencyDispatch = 5,
  LowLatencyCombine = 6,
};
const char* op_name(Op op);

// Rounds of one call, each with its own slots.
enum class Round : int { Request = 0, Reply = 1, Regrow = 2, Done = 3, Release = 4 };
constexpr int kNumRounds = 5;

class Control {
 public:
  // Collective: creates the control region (with node lists when the
  // topology is hierarchical).
  Control(transport::Fabric& fabric, double timeout_s, const NodeTopology& topo);

  // Starts call number seq (all ranks count calls identically).
  std::uint64_t begin(Op op);
  std::uint64_t seq() const noexcept { return seq_; }
  Op op() const noexcept { return op_; }
  double timeout_s() const noexcept { return timeout_s_; }

  // Sends out[p] to every rank p (itself included), then waits for and returns
  // every rank's message for this round, checking that all are in the same call.
  std::vector<Message> exchange(Round round, const std::vector<Message>& out,
                                const core::Deadline& deadline);
  // Like exchange, but only with the ranks in `peers` (send to `to`, read from `from`).
  std::vector<Message> exchange_some(Round round, const std::vector<Message>& out,
                                     const std::vector<int>& to, const std::vector<int>& from,
                                     const core::Deadline& deadline);

  // Signals `peer` that this rank's payload for the current call is complete
  // (Round::Done), or that it finished reading the peer's memory (Round::Release).
  // `phase` says what the wait is for, in the timeout message (e.g. "rows
  // back", "its batch for this node").
  void signal(Round round, int peer);
  void wait(Round round, int peer, const core::Deadline& deadline, const char* phase = nullptr);
  // Whether `peer`'s signal of `round` for the current call is here (no wait).
  bool arrived(Round round, int peer) const;
  void signal_done(int peer) { signal(Round::Done, peer); }
  void wait_done(int peer, const core::Deadline& deadline, const char* phase = nullptr) {
    wait(Round::Done, peer, deadline, phase);
  }

  // Throws AgreedError on every rank if any message says its sender's input
  // was bad. `own_error` is this rank's own error (empty if none).
  void agree(const std::vector<Message>& in, const std::string& own_error) const;

  // Node lists: per call, each rank may send each rank of its own node (itself
  // included) one list of up to nodes - 1 int64 (combine's in-place read lists,
  // combine_hier.cpp: one entry per other node, which a Message cannot hold for
  // every node count). The list is staged here and put at once; it is visible
  // to `peer` when this rank's next message to `peer` of this call is (a signal
  // follows the puts before it), and stays until the call after next (banks).
  // Sized from the group's node count, so any node count fits: per rank
  // 2 banks x ranks per node x (nodes - 1) x 8 bytes of control region.
  std::size_t node_list_capacity() const noexcept { return list_entries_; }
  void send_node_list(int peer, const std::vector<std::int64_t>& values);
  // `peer`'s list of the current call (call after its message arrived).
  const std::int64_t* node_list(int peer) const;

  // A message stamped with the current call.
  Message stamp() const;
  static void set_text(Message& m, const std::string& s);

 private:
  std::size_t signal_offset(Round round, int sender) const;
  std::size_t message_offset(Round round, int sender) const;
  std::size_t list_offset(int sender) const;
  void check_list_peer(int peer, const char* what) const;
  void check_call(const Message& m, int from, Round round) const;

  transport::Fabric& fabric_;
  transport::RegionId region_ = -1;
  int size_;
  int rank_;
  double timeout_s_;
  std::uint64_t seq_ = 0;
  Op op_ = Op::Layout;
  const NodeTopology& topo_;
  std::size_t list_entries_ = 0;        // int64 per node list: nodes - 1 when hierarchical, else 0
  std::vector<std::int64_t> list_out_;  // staged lists, per local index (puts' sources)
};

}  // namespace epx::comm
