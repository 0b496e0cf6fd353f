// What rank 0 tells every rank before each engine step: the segments to run
// (each on the rank that owns its sequence's KV cache), the sequences whose
// cache to free, and whether to shut down. Sent as one i64 array.
#pragma once

#include <cstdint>
#include <vector>

namespace epx::serve {

struct PlannedSegment {
  std::int64_t seq = 0;
  int owner = 0;             // the rank that holds the sequence's cache and runs it
  std::int64_t start = 0;    // position of tokens[0]
  std::int64_t reserve = 0;  // > 0: a new sequence; reserve this many positions first
  bool want_logits = false;
  std::vector<std::int32_t> tokens;
};

struct Release {
  std::int64_t seq = 0;
  int owner = 0;
};

struct StepPlan {
  bool shutdown = false;
  std::vector<Release> releases;  // applied before the segments
  std::vector<PlannedSegment> segments;
  std::int64_t tokens() const;
  // Segments with want_logits that `rank` owns (its rows of logits, in order).
  std::int64_t logit_rows(int rank) const;
};

std::vector<std::int64_t> encode(const StepPlan& plan);
// Throws Internal on a malformed message (a rank out of step with rank 0).
StepPlan decode(const std::vector<std::int64_t>& message);

}  // namespace epx::serve
