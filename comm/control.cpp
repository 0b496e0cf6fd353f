#include "comm/control.hpp"

#include <algorithm>
#include <cstring>

#include <epx/group.hpp>

#include "core/check.hpp"
#include "core/log.hpp"

namespace epx::comm {

const char* op_name(Op op) {
  switch (op) {
    case Op::Layout: return "get_dispatch_layout";
    case Op::Dispatch: return "dispatch";
    case Op::CachedDispatch: return "dispatch (cached)";
    case Op::Combine: return "combine";
    case Op::LowLatencyDispatch: return "low_latency_dispatch";
    case Op::LowLatencyCombine: return "low_latency_combine";
  }
  return "unknown op";
}

namespace {
const char* round_name(Round r) {
  switch (r) {
    case Round::Request: return "request";
    case Round::Reply: return "reply";
    case Round::Regrow: return "regrow";
    case Round::Done: return "payload";
    case Round::Release: return "release";
  }
  return "?";
}
constexpr int kBanks = 2;
}  // namespace

Control::Control(transport::Fabric& fabric, double timeout_s, const NodeTopology& topo)
    : fabric_(fabric),
      size_(fabric.group().size()),
      rank_(fabric.group().rank()),
      timeout_s_(timeout_s),
      topo_(topo),
      list_entries_(topo.hierarchical() ? static_cast<std::size_t>(topo.nodes() - 1) : 0) {
  const std::size_t slots = std::size_t(kBanks) * kNumRounds * size_;
  const std::size_t lists = std::size_t(kBanks) * topo.per_node() * list_entries_;
  list_out_.assign(static_cast<std::size_t>(topo.per_node()) * list_entries_, 0);
  region_ = fabric_.create_region(
      slots * (sizeof(std::uint64_t) + sizeof(Message)) + lists * sizeof(std::int64_t),
      core::Deadline(timeout_s));
}

std::uint64_t Control::begin(Op op) {
  fabric_.check_not_aborted();
  op_ = op;
  return ++seq_;
}

std::size_t Control::signal_offset(Round round, int sender) const {
  const std::size_t bank = seq_ % kBanks;
  return ((bank * kNumRounds + std::size_t(round)) * size_ + sender) * sizeof(std::uint64_t);
}

std::size_t Control::message_offset(Round round, int sender) const {
  const std::size_t base = std::size_t(kBanks) * kNumRounds * size_ * sizeof(std::uint64_t);
  const std::size_t bank = seq_ % kBanks;
  return base + ((bank * kNumRounds + std::size_t(round)) * size_ + sender) * sizeof(Message);
}

// Node lists follow the messages: per bank, one list per local index of the sender.
std::size_t Control::list_offset(int sender) const {
  const std::size_t base =
      std::size_t(kBanks) * kNumRounds * size_ * (sizeof(std::uint64_t) + sizeof(Message));
  const std::size_t bank = seq_ % kBanks;
  const std::size_t slot =
      bank * static_cast<std::size_t>(topo_.per_node()) + topo_.local_of(sender);
  return base + slot * list_entries_ * sizeof(std::int64_t);
}

void Control::check_list_peer(int peer, const char* what) const {
  EPX_CHECK(
      peer >= 0 && peer < size_ && list_entries_ > 0 && topo_.node_of(peer) == topo_.node_of(rank_),
      Internal, op_name(op_), " #", seq_, ": ", what, " rank ", peer,
      ": node lists go between ranks of one node of a hierarchical topology (this rank ", rank_,
      " on node ", topo_.node_of(rank_), ")");
}

void Control::send_node_list(int peer, const std::vector<std::int64_t>& values) {
  check_list_peer(peer, "a node list to");
  EPX_CHECK(values.size() <= list_entries_, Internal, op_name(op_), " #", seq_, ": a node list of ",
            values.size(), " entries for rank ", peer,
            ", expected at most nodes - 1 = ", list_entries_);
  std::int64_t* staged =
      list_out_.data() + static_cast<std::size_t>(topo_.local_of(peer)) * list_entries_;
  std::copy(values.begin(), values.end(), staged);
  if (values.empty()) return;
  fabric_.to(peer).put(peer, staged, region_, list_offset(rank_),
                       values.size() * sizeof(std::int64_t));
}

const std::int64_t* Control::node_list(int peer) const {
  check_list_peer(peer, "the node list of");
  return reinterpret_cast<const std::int64_t*>(fabric_.local(region_).get() + list_offset(peer));
}

Message Control::stamp() const {
  Message m;
  m.seq = seq_;
  m.op = static_cast<std::uint32_t>(op_);
  return m;
}

void Control::set_text(Message& m, const std::string& s) {
  const std::size_t n = std::min(s.size(), sizeof(m.text) - 1);
  std::memcpy(m.text, s.data(), n);
  m.text[n] = '\0';
}

void Control::check_call(const Message& m, int from, Round round) const {
  if (m.seq == seq_ && m.op == static_cast<std::uint32_t>(op_)) return;
  // The calls have drifted apart: the peers cannot agree on anything any more,
  // so this is not an AgreedError and the group is aborted by the caller.
  EPX_THROW(InvalidArgument, op_name(op_), " #", seq_, ": rank ", from, " is in ",
            op_name(static_cast<Op>(m.op)), " #", m.seq, " (", round_name(round),
            " round); every rank must make the same calls on a Buffer in the same order");
}

std::vector<Message> Control::exchange(Round round, const std::vector<Message>& out,
                                       const core::Deadline& deadline) {
  std::vector<int> all(size_);
  for (int p = 0; p < size_; ++p) all[p] = p;
  return exchange_some(round, out, all, all, deadline);
}

std::vector<Message> Control::exchange_some(Round round, const std::vector<Message>& out,
                                            const std::vector<int>& to,
                                            const std::vector<int>& from,
                                            const core::Deadline& deadline) {
  EPX_LOG(Trace, Comm, op_name(op_), " #", seq_, ": ", round_name(round), " round, to ", to.size(),
          " ranks, from ", from.size());
  for (int p : to) {
    fabric_.to(p).put(p, &out[p], region_, message_offset(round, rank_), sizeof(Message));
    fabric_.to(p).signal(p, region_, signal_offset(round, rank_), seq_);
  }
  for (int p : to) fabric_.to(p).flush(p);
  std::vector<Message> in(size_);
  const std::byte* base = fabric_.local(region_).get();
  for (int p : from) {
    fabric_.wait(region_, signal_offset(round, p), seq_, deadline, [&] {
      return core::concat(op_name(op_), " #", seq_, ": waiting for rank ", p, " in the ",
                          round_name(round), " round");
    });
    std::memcpy(&in[p], base + message_offset(round, p), sizeof(Message));
    check_call(in[p], p, round);
  }
  EPX_LOG(Trace, Comm, op_name(op_), " #", seq_, ": ", round_name(round), " round done");
  return in;
}

void Control::signal(Round round, int peer) {
  fabric_.to(peer).signal(peer, region_, signal_offset(round, rank_), seq_);
}

bool Control::arrived(Round round, int peer) const {
  return fabric_.reached(region_, signal_offset(round, peer), seq_);
}

void Control::wait(Round round, int peer, const core::Deadline& deadline, const char* phase) {
  fabric_.wait(region_, signal_offset(round, peer), seq_, deadline, [&] {
    return core::concat(op_name(op_), " #", seq_, ": waiting for rank ", peer, " in the ",
                        round_name(round), " round", phase ? " (" : "", phase ? phase : "",
                        phase ? ")" : "");
  });
}

void Control::agree(const std::vector<Message>& in, const std::string& own_error) const {
  if (!own_error.empty()) throw AgreedError(own_error);
  for (int p = 0; p < size_; ++p)
    if (in[p].failed)
      throw AgreedError(core::concat(core::rank_prefix(), " ", op_name(op_), ": rank ", p,
                                     " rejected its input: ", in[p].text));
}

}  // namespace epx::comm
