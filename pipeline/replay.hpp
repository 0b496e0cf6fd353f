// The one engine behind validate() and simulate(): plays a schedule with each
// rank running its ops in order, each op starting once its rank is free and
// its inputs have arrived (receives block; sends never do). Internal.
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <vector>

#include <epx/pipeline_tools.hpp>

namespace epx::pipeline::detail {

// One computation inside an op: F, B, Bi or W of one (micro-batch, chunk).
// An FB op has two pieces, every other op one.
struct Piece {
  OpKind kind = OpKind::F;
  int mb = -1;
  int chunk = -1;
};

// Fills out[0..n) and returns n (1 or 2).
int pieces_of(const Op& op, Piece out[2]);

struct Replay {
  std::vector<std::vector<OpTime>> times;  // [rank][op]; valid for the first done[rank]
  std::vector<std::size_t> done;           // ops run per rank
  bool complete = false;
  std::string blocked;  // when not complete: what each stuck rank waits for
};

// Assumes the placement and the op fields are consistent (validate checks
// that first). duration(rank, op) gives each op's time; p2p is added to every
// input that comes from another rank.
Replay replay(const Schedule& schedule, const std::function<double(int, const Op&)>& duration,
              double p2p);

}  // namespace epx::pipeline::detail
