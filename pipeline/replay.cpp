#include "pipeline/replay.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/check.hpp"

namespace epx::pipeline::detail {

int pieces_of(const Op& op, Piece out[2]) {
  if (op.kind == OpKind::FB) {
    out[0] = {OpKind::F, op.mb, op.chunk};
    out[1] = {OpKind::B, op.b_mb, op.b_chunk};
    return 2;
  }
  out[0] = {op.kind, op.mb, op.chunk};
  return 1;
}

namespace {

constexpr double kNotYet = std::numeric_limits<double>::quiet_NaN();

class Player {
 public:
  Player(const Schedule& s, double p2p)
      : s_(s),
        p2p_(p2p),
        f_end_(static_cast<std::size_t>(s.microbatches) * s.stages, kNotYet),
        b_end_(f_end_.size(), kNotYet) {}

  // Earliest start of `piece` on `rank` given its inputs, raising `t`; false
  // (and what is missing, when asked) if an input is not produced yet.
  bool inputs_ready(int rank, const Piece& p, double& t, std::string* missing) const {
    const int s = s_.stage_of[rank][p.chunk];
    switch (p.kind) {
      case OpKind::F:
        return s == 0 || need(f_end_, p.mb, s - 1, rank, "F", t, missing);
      case OpKind::B:
      case OpKind::Bi:
        if (!need(f_end_, p.mb, s, rank, "F", t, missing)) return false;
        return s == s_.stages - 1 || need(b_end_, p.mb, s + 1, rank, "B", t, missing);
      case OpKind::W:
        return need(b_end_, p.mb, s, rank, "Bi", t, missing);
      case OpKind::FB:
        break;
    }
    EPX_THROW(Internal, "pipeline replay: FB passed as one piece");
  }

  void finish(int rank, const Piece& p, double end) {
    const std::size_t i = index(p.mb, s_.stage_of[rank][p.chunk]);
    if (p.kind == OpKind::F) f_end_[i] = end;
    if (p.kind == OpKind::B || p.kind == OpKind::Bi) b_end_[i] = end;
  }

 private:
  std::size_t index(int mb, int stage) const {
    return static_cast<std::size_t>(mb) * s_.stages + stage;
  }

  bool need(const std::vector<double>& ends, int mb, int stage, int rank, const char* what,
            double& t, std::string* missing) const {
    const int from = s_.paths[s_.path_of[mb]][stage].rank;
    const double end = ends[index(mb, stage)];
    if (std::isnan(end)) {
      if (missing != nullptr)
        *missing = core::concat(what, " of micro-batch ", mb, " stage ", stage, " on rank ", from);
      return false;
    }
    t = std::max(t, end + (from == rank ? 0.0 : p2p_));
    return true;
  }

  const Schedule& s_;
  double p2p_;
  std::vector<double> f_end_;
  std::vector<double> b_end_;
};

}  // namespace

Replay replay(const Schedule& schedule, const std::function<double(int, const Op&)>& duration,
              double p2p) {
  Player player(schedule, p2p);
  Replay out;
  out.times.resize(schedule.ranks);
  out.done.assign(schedule.ranks, 0);
  std::vector<double> free_at(schedule.ranks, 0.0);
  // Run every rank as far as its inputs allow, until no rank moves. Start
  // times depend only on inputs and order, not on which rank goes first.
  for (bool moved = true; moved;) {
    moved = false;
    for (int r = 0; r < schedule.ranks; ++r) {
      const std::vector<Op>& ops = schedule.ops[r];
      while (out.done[r] < ops.size()) {
        const Op& op = ops[out.done[r]];
        Piece pieces[2];
        const int n = pieces_of(op, pieces);
        double start = free_at[r];
        bool ready = true;
        for (int i = 0; i < n && ready; ++i)
          ready = player.inputs_ready(r, pieces[i], start, nullptr);
        if (!ready) break;
        const double end = start + duration(r, op);
        for (int i = 0; i < n; ++i) player.finish(r, pieces[i], end);
        out.times[r].push_back({start, end});
        free_at[r] = end;
        ++out.done[r];
        moved = true;
      }
    }
  }
  out.complete = true;
  for (int r = 0; r < schedule.ranks; ++r) {
    const std::vector<Op>& ops = schedule.ops[r];
    if (out.done[r] == ops.size()) continue;
    out.complete = false;
    Piece pieces[2];
    const int n = pieces_of(ops[out.done[r]], pieces);
    std::string missing;
    double ignored = 0.0;
    for (int i = 0; i < n; ++i) {
      if (!player.inputs_ready(r, pieces[i], ignored, &missing)) break;
    }
    if (!out.blocked.empty()) out.blocked += "; ";
    out.blocked += core::concat("rank ", r, " op ", out.done[r], " ", to_string(ops[out.done[r]]),
                                " waits for ", missing);
  }
  return out;
}

}  // namespace epx::pipeline::detail
