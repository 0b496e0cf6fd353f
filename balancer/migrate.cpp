// migrate_experts (include/epx/balancer.hpp): check everything on every rank
// and agree on it, then move the planned expert copies (migrate_plan.hpp)
// with non-blocking point-to-point messages polled against one deadline, and
// lay out this rank's slots under the matched placement.
#include <mpi.h>

#include <algorithm>
#include <cstring>
#include <epx/balancer.hpp>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "balancer/migrate_plan.hpp"
#include "balancer/problem.hpp"
#include "core/agree.hpp"
#include "core/check.hpp"
#include "core/log.hpp"
#include "core/config.hpp"
#include "core/wait.hpp"

namespace epx::balancer {

namespace {

const char* const kOp = "migrate_experts";
// Tag of every migration message. Both sides post a pair's messages in the
// same (plan) order, and MPI keeps that order per (source, tag, comm).
constexpr int kTag = 0x6d67;  // "mg"
// Larger tensors go in several messages: MPI counts are ints.
constexpr std::size_t kMaxMessageBytes = std::size_t{1} << 30;

// Tensor j of a slot must look like tensor j of local slot 0 of its layer.
void check_weights(const detail::PlacementPair& pair,
                   const std::vector<std::vector<SlotTensors>>& weights) {
  EPX_CHECK_EQ(static_cast<std::int64_t>(weights.size()), pair.layers, InvalidArgument, kOp,
               ": weights.size() (layers)");
  for (int l = 0; l < pair.layers; ++l) {
    const std::vector<SlotTensors>& layer = weights[l];
    EPX_CHECK_EQ(static_cast<std::int64_t>(layer.size()), pair.current_per_gpu(), InvalidArgument,
                 kOp, ": layer ", l, ": weights[", l, "].size() (current slots per rank)");
    EPX_CHECK(!layer[0].empty(), InvalidArgument, kOp, ": layer ", l,
              ": slot 0 has no tensors, expected at least one");
    for (std::size_t i = 0; i < layer.size(); ++i) {
      EPX_CHECK_EQ(layer[i].size(), layer[0].size(), InvalidArgument, kOp, ": layer ", l,
                   ": tensors of slot ", i, " vs slot 0");
      for (std::size_t j = 0; j < layer[i].size(); ++j) {
        const Tensor& t = layer[i][j];
        const Tensor& ref = layer[0][j];
        EPX_CHECK(t.defined() && t.device() == Device::cpu, InvalidArgument, kOp, ": weights[", l,
                  "][", i, "][", j, "] is ", t.defined() ? t.describe() : "undefined",
                  ", expected a host tensor");
        EPX_CHECK(t.shape() == ref.shape() && t.dtype() == ref.dtype(), InvalidArgument, kOp,
                  ": weights[", l, "][", i, "][", j, "] is ", t.describe(), ", expected ",
                  ref.describe(), " like slot 0 (one shape and dtype per tensor and layer)");
      }
    }
  }
}

// FNV-1a over what every rank must agree on: the placements and the shapes
// and dtypes of one slot per layer. Folded to 31 bits for allreduce_int.
int signature(const detail::PlacementPair& pair,
              const std::vector<std::vector<SlotTensors>>& weights) {
  std::uint64_t h = 1469598103934665603ull;
  auto mix = [&h](const void* p, std::size_t n) {
    const auto* b = static_cast<const unsigned char*>(p);
    for (std::size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 1099511628211ull;
  };
  auto mix_int = [&mix](std::int64_t v) { mix(&v, sizeof v); };
  mix_int(pair.current_slots);
  mix_int(pair.target_slots);
  mix(pair.current, sizeof(std::int64_t) * pair.layers * pair.current_slots);
  mix(pair.target, sizeof(std::int64_t) * pair.layers * pair.target_slots);
  for (const std::vector<SlotTensors>& layer : weights) {
    mix_int(static_cast<std::int64_t>(layer[0].size()));
    for (const Tensor& t : layer[0]) {
      mix_int(static_cast<std::int64_t>(t.dtype()));
      for (const std::int64_t d : t.shape()) mix_int(d);
      mix_int(-1);
    }
  }
  return static_cast<int>((h ^ (h >> 31) ^ (h >> 62)) & 0x7fffffff);
}

// One message in flight and what it carries, for the timeout message.
struct Message {
  int peer = 0;
  int layer = 0;
  int expert = 0;
  bool receive = false;
};

// Posts one slot's tensors to or from `peer` in chunks of kMaxMessageBytes.
void post(SlotTensors& slot, const Message& what, MPI_Comm comm, std::vector<MPI_Request>& requests,
          std::vector<Message>& messages) {
  for (Tensor& t : slot) {
    auto* bytes = static_cast<unsigned char*>(t.raw());
    for (std::size_t off = 0; off < t.nbytes(); off += kMaxMessageBytes) {
      const int n = static_cast<int>(std::min(kMaxMessageBytes, t.nbytes() - off));
      MPI_Request r;
      if (what.receive)
        MPI_Irecv(bytes + off, n, MPI_BYTE, what.peer, kTag, comm, &r);
      else
        MPI_Isend(bytes + off, n, MPI_BYTE, what.peer, kTag, comm, &r);
      requests.push_back(r);
      messages.push_back(what);
    }
  }
}

SlotTensors clone(const SlotTensors& slot) {
  SlotTensors out;
  out.reserve(slot.size());
  for (const Tensor& t : slot) out.push_back(t.clone());
  return out;
}

}  // namespace

Migration migrate_experts(Group& group, const Placement& current, const Placement& target,
                          std::vector<std::vector<SlotTensors>> weights, double timeout_s) {
  // Bounded by a valid timeout even when the given one is the bad input.
  const core::Deadline deadline(core::agreement_timeout_s(timeout_s));
  const int me = group.rank(), R = group.size();
  MPI_Comm comm = group.comm();

  // 1. Check locally, then agree: bad input anywhere fails every rank here.
  detail::PlacementPair pair;
  std::string error;
  try {
    core::resolve_timeout_s(timeout_s, "migrate_experts: timeout_s");
    pair = detail::check_pair(kOp, current, target, R);
    check_weights(pair, weights);
  } catch (const Error& e) {
    error = e.what();
  }
  core::agree_on_error(comm, error, ErrorCode::InvalidArgument, deadline, kOp);
  const int sig = signature(pair, weights);
  const int lo = core::allreduce_int(comm, sig, MPI_MIN, deadline, kOp);
  const int hi = core::allreduce_int(comm, sig, MPI_MAX, deadline, kOp);
  EPX_CHECK(lo == hi, InvalidArgument, kOp,
            ": the placements or the slot tensors' shapes and dtypes differ between ranks "
            "(signature ",
            sig, " here, from ", lo, " to ", hi, " across the group)");

  // 2. The plan, the same on every rank.
  std::vector<int> node_of(static_cast<std::size_t>(R));
  for (int r = 0; r < R; ++r) node_of[r] = group.node_of(r);
  const std::vector<detail::Transfer> plan = detail::plan_transfers(pair, node_of);
  const std::int64_t sc = pair.current_per_gpu(), st = pair.target_per_gpu();
  auto current_expert = [&](int l, std::int64_t i) {
    return pair.current[l * pair.current_slots + me * sc + i];
  };

  // An aborted group (another module's failure, or the user's abort) stops
  // the migration before any weight moves.
  EPX_CHECK(!group.aborted(), PeerFailure, kOp, ": the group was aborted (", group.abort_reason(),
            ")");
  // 3. Receive buffers, then every receive and send, then wait for all.
  std::map<std::pair<int, int>, SlotTensors> received;  // (layer, expert) -> one copy
  std::vector<MPI_Request> requests;
  std::vector<Message> messages;
  Migration out;
  std::vector<std::uint64_t> slot_bytes(static_cast<std::size_t>(pair.layers), 0);
  for (int l = 0; l < pair.layers; ++l)
    for (const Tensor& t : weights[l][0]) slot_bytes[l] += t.nbytes();
  for (const detail::Transfer& t : plan) {
    out.stats.moved_bytes += slot_bytes[t.layer];
    if (t.dst != me) continue;
    SlotTensors& slot = received[{t.layer, t.expert}];
    for (const Tensor& ref : weights[t.layer][0])
      slot.push_back(Tensor::empty(ref.shape(), ref.dtype()));
    post(slot, {t.src, t.layer, t.expert, true}, comm, requests, messages);
    out.stats.bytes_received += slot_bytes[t.layer];
  }
  for (const detail::Transfer& t : plan) {
    if (t.src != me) continue;
    std::int64_t i = 0;
    while (current_expert(t.layer, i) != t.expert) ++i;  // the plan says this rank holds it
    post(weights[t.layer][i], {t.dst, t.layer, t.expert, false}, comm, requests, messages);
    out.stats.bytes_sent += slot_bytes[t.layer];
    if (node_of[t.dst] != node_of[me]) out.stats.internode_bytes_sent += slot_bytes[t.layer];
  }
  EPX_LOG(Trace, Balancer, "migrate_experts: ", plan.size(), " transfers in the plan, ",
          requests.size(), " messages posted by this rank");
  core::Backoff backoff;
  std::vector<int> done(requests.size());
  // Count what is pending: a request may already be null (complete).
  std::size_t left = static_cast<std::size_t>(std::count_if(
      requests.begin(), requests.end(), [](MPI_Request r) { return r != MPI_REQUEST_NULL; }));
  while (left > 0) {
    int count = 0;
    MPI_Testsome(static_cast<int>(requests.size()), requests.data(), &count, done.data(),
                 MPI_STATUSES_IGNORE);
    if (count == MPI_UNDEFINED) break;  // no active request left
    if (count > 0) {
      left -= static_cast<std::size_t>(count);
      backoff.reset();
      continue;
    }
    const bool aborted = group.aborted();
    if (!aborted && !deadline.expired()) {
      backoff.pause();
      continue;
    }
    // MPI may still write into or read from these buffers: keep them alive
    // for the life of the process rather than free memory under a transfer.
    new auto(std::make_pair(std::move(weights), std::move(received)));
    std::size_t k = 0;
    while (requests[k] == MPI_REQUEST_NULL) ++k;
    const Message& m = messages[k];
    if (aborted)
      EPX_THROW(PeerFailure, kOp, ": the group was aborted (", group.abort_reason(), ")");
    const std::string why = core::concat(
        kOp, ": timed out after ", deadline.seconds(), " s ", m.receive ? "receiving" : "sending",
        " expert ", m.expert, " of layer ", m.layer, m.receive ? " from rank " : " to rank ",
        m.peer, " (", left,
        " messages left; did that rank call migrate_experts with the same placements?)");
    group.abort(why);
    EPX_THROW(Timeout, why);
  }

  // 4. This rank's slots under the matched placement: kept replicas keep
  // their tensors, others come from an unused current slot of the same
  // expert, a clone of a local one, or the received copy.
  detail::Shape shape;
  shape.layers = pair.layers;
  shape.experts = pair.experts;
  shape.replicas = static_cast<int>(pair.target_slots);
  out.placement = detail::assemble(detail::match_phy2log(pair), shape);
  const std::int64_t* matched = out.placement.phy2log.data<std::int64_t>();
  const std::vector<MigrationVolume> volume = detail::volume_per_layer(pair);
  out.weights.resize(static_cast<std::size_t>(pair.layers));
  for (int l = 0; l < pair.layers; ++l) {
    out.stats.naive_bytes += static_cast<std::uint64_t>(volume[l].naive) * slot_bytes[l];
    std::vector<SlotTensors>& mine = out.weights[l];
    mine.resize(static_cast<std::size_t>(st));
    std::vector<char> used(static_cast<std::size_t>(sc), 0);
    std::vector<std::int64_t> wanted(static_cast<std::size_t>(st), -1);
    for (std::int64_t i = 0; i < st; ++i) {
      const std::int64_t e = matched[l * pair.target_slots + me * st + i];
      if (i < sc && current_expert(l, i) == e) {
        mine[i] = weights[l][i];
        used[i] = 1;
      } else {
        wanted[i] = e;
      }
    }
    for (std::int64_t i = 0; i < st; ++i) {
      const std::int64_t e = wanted[i];
      if (e < 0) continue;
      std::int64_t free = -1, any = -1;
      for (std::int64_t j = 0; j < sc; ++j) {
        if (current_expert(l, j) != e) continue;
        if (any < 0) any = j;
        if (!used[j] && free < 0) free = j;
      }
      if (free >= 0) {
        mine[i] = weights[l][free];
        used[free] = 1;
      } else if (any >= 0) {
        mine[i] = clone(weights[l][any]);
      } else {
        SlotTensors& copy = received.at({l, static_cast<int>(e)});
        if (copy.empty()) {
          // Taken by an earlier slot of this expert: copy that one.
          std::int64_t j = 0;
          while (wanted[j] != e) ++j;
          mine[i] = clone(mine[j]);
        } else {
          mine[i] = std::move(copy);
          copy.clear();
        }
      }
    }
  }
  EPX_LOG(Info, Balancer, "migrate_experts: ", out.stats.moved_bytes, " bytes moved in the group (",
          out.stats.naive_bytes, " without slot matching); this rank sent ", out.stats.bytes_sent,
          " (", out.stats.internode_bytes_sent, " to other nodes), received ", out.stats.bytes_received);
  return out;
}

}  // namespace epx::balancer
