// Names of ops and schedules, the placement builders, and make_schedule.
#include <string>

#include "core/check.hpp"
#include "pipeline/placement.hpp"

namespace epx::pipeline {

const char* to_string(OpKind kind) noexcept {
  switch (kind) {
    case OpKind::F:
      return "F";
    case OpKind::B:
      return "B";
    case OpKind::Bi:
      return "Bi";
    case OpKind::W:
      return "W";
    case OpKind::FB:
      return "FB";
  }
  return "?";
}

std::string to_string(const Op& op) {
  std::string s = std::string(to_string(op.kind)) + "(" + std::to_string(op.mb) + "," +
                  std::to_string(op.chunk);
  // Appended piece by piece: `"|" + std::to_string(...)` trips a false
  // -Wrestrict in GCC 12's string headers.
  if (op.kind == OpKind::FB) {
    s += '|';
    s += std::to_string(op.b_mb);
    s += ',';
    s += std::to_string(op.b_chunk);
  }
  return s + ")";
}

namespace {

struct KindName {
  ScheduleKind kind;
  const char* name;
};
constexpr KindName kKindNames[] = {
    {ScheduleKind::gpipe, "gpipe"},          {ScheduleKind::one_f_one_b, "1f1b"},
    {ScheduleKind::zb_h1, "zb-h1"},          {ScheduleKind::dualpipe, "dualpipe"},
    {ScheduleKind::dualpipe_v, "dualpipev"},
};

}  // namespace

const char* to_string(ScheduleKind kind) noexcept {
  for (const KindName& k : kKindNames) {
    if (k.kind == kind) return k.name;
  }
  return "?";
}

ScheduleKind parse_schedule_kind(std::string_view name) {
  for (const KindName& k : kKindNames) {
    if (name == k.name) return k.kind;
  }
  EPX_THROW(InvalidArgument, "pipeline: unknown schedule '", name,
            "', expected gpipe, 1f1b, zb-h1, dualpipe or dualpipev");
}

Schedule make_schedule(ScheduleKind kind, const ScheduleSpec& spec) {
  switch (kind) {
    case ScheduleKind::gpipe:
      return gpipe(spec.ranks, spec.microbatches);
    case ScheduleKind::one_f_one_b:
      return one_f_one_b(spec.ranks, spec.microbatches);
    case ScheduleKind::zb_h1:
      return zb_h1(spec.ranks, spec.microbatches);
    case ScheduleKind::dualpipe:
      return dualpipe(spec.ranks, spec.microbatches);
    case ScheduleKind::dualpipe_v:
      return dualpipe_v(spec.ranks, spec.microbatches);
  }
  EPX_THROW(InvalidArgument, "pipeline: schedule kind ", static_cast<int>(kind), " is not known");
}

namespace detail {

namespace {

Schedule empty_schedule(ScheduleKind kind, int ranks, int microbatches, int stages,
                        int chunks_per_rank) {
  Schedule s;
  s.kind = kind;
  s.ranks = ranks;
  s.microbatches = microbatches;
  s.stages = stages;
  s.chunks_per_rank = chunks_per_rank;
  s.chunk_fraction = 1.0 / stages;
  s.stage_of.assign(ranks, std::vector<int>(chunks_per_rank, -1));
  s.ops.resize(ranks);
  return s;
}

void place(Schedule& s, int path, int stage, Location where) {
  s.paths[path][stage] = where;
  s.stage_of[where.rank][where.chunk] = stage;
}

}  // namespace

Schedule linear_placement(ScheduleKind kind, int ranks, int microbatches) {
  Schedule s = empty_schedule(kind, ranks, microbatches, ranks, 1);
  s.paths.assign(1, std::vector<Location>(ranks));
  for (int r = 0; r < ranks; ++r) place(s, 0, r, {r, 0});
  s.path_of.assign(microbatches, 0);
  return s;
}

Schedule dual_placement(int ranks, int microbatches) {
  Schedule s = empty_schedule(ScheduleKind::dualpipe, ranks, microbatches, ranks, 2);
  s.paths.assign(2, std::vector<Location>(ranks));
  for (int r = 0; r < ranks; ++r) {
    place(s, 0, r, {r, 0});
    place(s, 1, ranks - 1 - r, {r, 1});
  }
  s.path_of.assign(microbatches, 0);
  for (int m = microbatches / 2; m < microbatches; ++m) s.path_of[m] = 1;
  return s;
}

Schedule v_placement(int ranks, int microbatches) {
  Schedule s = empty_schedule(ScheduleKind::dualpipe_v, ranks, microbatches, 2 * ranks, 2);
  s.paths.assign(1, std::vector<Location>(2 * ranks));
  for (int r = 0; r < ranks; ++r) {
    place(s, 0, r, {r, 0});
    place(s, 0, 2 * ranks - 1 - r, {r, 1});
  }
  s.path_of.assign(microbatches, 0);
  return s;
}

}  // namespace detail
}  // namespace epx::pipeline
