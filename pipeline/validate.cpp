// validate(): the placement is consistent, every (micro-batch, stage) is
// computed exactly once where its stage lives and in a possible order, and the
// whole schedule runs to the end without a deadlock.
#include <string>
#include <vector>

#include "core/check.hpp"
#include "pipeline/replay.hpp"

namespace epx::pipeline {

namespace {

const char* name_of(const Schedule& s) {
  return to_string(s.kind);
}

void check_placement(const Schedule& s) {
  const char* name = name_of(s);
  EPX_CHECK(s.ranks >= 1 && s.microbatches >= 1 && s.stages >= 1 && s.chunks_per_rank >= 1,
            InvalidArgument, "validate(", name, "): ranks = ", s.ranks,
            ", microbatches = ", s.microbatches, ", stages = ", s.stages,
            ", chunks_per_rank = ", s.chunks_per_rank, ", expected all >= 1");
  EPX_CHECK_EQ(s.stage_of.size(), static_cast<std::size_t>(s.ranks), InvalidArgument, "validate(",
               name, "): stage_of has one row per rank");
  EPX_CHECK_EQ(s.ops.size(), static_cast<std::size_t>(s.ranks), InvalidArgument, "validate(", name,
               "): ops has one list per rank");
  EPX_CHECK_EQ(s.path_of.size(), static_cast<std::size_t>(s.microbatches), InvalidArgument,
               "validate(", name, "): path_of has one entry per micro-batch");
  for (std::size_t p = 0; p < s.paths.size(); ++p) {
    EPX_CHECK_EQ(s.paths[p].size(), static_cast<std::size_t>(s.stages), InvalidArgument,
                 "validate(", name, "): path ", p, " visits every stage once");
    for (int st = 0; st < s.stages; ++st) {
      const Location& at = s.paths[p][st];
      EPX_CHECK(at.rank >= 0 && at.rank < s.ranks && at.chunk >= 0 &&
                    at.chunk < s.chunks_per_rank &&
                    s.stage_of[at.rank].size() == static_cast<std::size_t>(s.chunks_per_rank) &&
                    s.stage_of[at.rank][at.chunk] == st,
                InvalidArgument, "validate(", name, "): path ", p, " puts stage ", st, " on rank ",
                at.rank, " chunk ", at.chunk, ", which stage_of does not hold it");
    }
  }
  for (int m = 0; m < s.microbatches; ++m) {
    EPX_CHECK(s.path_of[m] >= 0 && static_cast<std::size_t>(s.path_of[m]) < s.paths.size(),
              InvalidArgument, "validate(", name, "): micro-batch ", m, " takes path ",
              s.path_of[m], ", expected 0 <= path < ", s.paths.size());
  }
}

// Where each (micro-batch, stage) piece sits in its rank's list; -1: absent.
struct Seen {
  int f = -1, b = -1, bi = -1, w = -1;
  int count = 0;  // pieces seen, to catch duplicates
};

void check_piece(const Schedule& s, int rank, std::size_t i, const detail::Piece& p,
                 std::vector<Seen>& seen) {
  const char* name = name_of(s);
  const std::string where =
      core::concat("validate(", name, "): rank ", rank, " op ", i, " ", to_string(s.ops[rank][i]));
  EPX_CHECK(p.mb >= 0 && p.mb < s.microbatches, InvalidArgument, where, ": micro-batch ", p.mb,
            ", expected 0 <= mb < ", s.microbatches);
  EPX_CHECK(p.chunk >= 0 && p.chunk < s.chunks_per_rank, InvalidArgument, where, ": chunk ",
            p.chunk, ", expected 0 <= chunk < ", s.chunks_per_rank);
  const int stage = s.stage_of[rank][p.chunk];
  EPX_CHECK(s.paths[s.path_of[p.mb]][stage] == (Location{rank, p.chunk}), InvalidArgument, where,
            ": micro-batch ", p.mb, " does not pass through rank ", rank, " chunk ", p.chunk);
  Seen& at = seen[static_cast<std::size_t>(p.mb) * s.stages + stage];
  int* slot = p.kind == OpKind::F    ? &at.f
              : p.kind == OpKind::B  ? &at.b
              : p.kind == OpKind::Bi ? &at.bi
                                     : &at.w;
  EPX_CHECK(*slot < 0, InvalidArgument, where, ": a second ", to_string(p.kind), " of micro-batch ",
            p.mb, " stage ", stage, " (the first is op ", *slot, ")");
  *slot = static_cast<int>(i);
}

void check_pieces(const Schedule& s) {
  const char* name = name_of(s);
  std::vector<Seen> seen(static_cast<std::size_t>(s.microbatches) * s.stages);
  for (int r = 0; r < s.ranks; ++r) {
    for (std::size_t i = 0; i < s.ops[r].size(); ++i) {
      const Op& op = s.ops[r][i];
      detail::Piece pieces[2];
      const int n = detail::pieces_of(op, pieces);
      EPX_CHECK(n == 1 || op.mb != op.b_mb, InvalidArgument, "validate(", name, "): rank ", r,
                " op ", i, " ", to_string(op), ": an FB unit pairs two different micro-batches");
      for (int k = 0; k < n; ++k) check_piece(s, r, i, pieces[k], seen);
    }
  }
  for (int m = 0; m < s.microbatches; ++m) {
    for (int st = 0; st < s.stages; ++st) {
      const Seen& at = seen[static_cast<std::size_t>(m) * s.stages + st];
      const Location loc = s.paths[s.path_of[m]][st];
      const std::string what = core::concat("validate(", name, "): micro-batch ", m, " stage ", st,
                                            " (rank ", loc.rank, " chunk ", loc.chunk, ")");
      EPX_CHECK(at.f >= 0, InvalidArgument, what, " has no F");
      const bool full = at.b >= 0 && at.bi < 0 && at.w < 0;
      const bool split = at.b < 0 && at.bi >= 0 && at.w >= 0;
      EPX_CHECK(full || split, InvalidArgument, what,
                " needs one backward: a B, or a Bi and a W (has B: ", at.b >= 0,
                ", Bi: ", at.bi >= 0, ", W: ", at.w >= 0, ")");
      const int backward = full ? at.b : at.bi;
      EPX_CHECK(at.f < backward, InvalidArgument, what, ": its backward at op ", backward,
                " does not come after its F at op ", at.f);
      EPX_CHECK(!split || at.bi < at.w, InvalidArgument, what, ": its W at op ", at.w,
                " does not come after its Bi at op ", at.bi);
    }
  }
}

}  // namespace

void validate(const Schedule& schedule) {
  check_placement(schedule);
  check_pieces(schedule);
  const detail::Replay run = detail::replay(
      schedule, [](int, const Op&) { return 1.0; }, 0.0);
  EPX_CHECK(run.complete, InvalidArgument, "validate(", name_of(schedule),
            "): deadlock with blocking receives: ", run.blocked);
}

}  // namespace epx::pipeline
