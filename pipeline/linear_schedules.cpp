// One chunk per rank, micro-batches enter at rank 0: GPipe, 1F1B, ZB-H1.
#include <algorithm>

#include "core/check.hpp"
#include "pipeline/placement.hpp"

namespace epx::pipeline {

namespace {

void check_shape(const char* name, int ranks, int microbatches) {
  EPX_CHECK(ranks >= 1, InvalidArgument, name, " needs at least one rank, got ", ranks);
  EPX_CHECK(microbatches >= 1, InvalidArgument, name, " needs at least one micro-batch, got ",
            microbatches);
}

}  // namespace

Schedule gpipe(int ranks, int microbatches) {
  check_shape("gpipe", ranks, microbatches);
  Schedule s = detail::linear_placement(ScheduleKind::gpipe, ranks, microbatches);
  for (int r = 0; r < ranks; ++r) {
    for (int m = 0; m < microbatches; ++m) s.ops[r].push_back(Op::forward(m, 0));
    for (int m = 0; m < microbatches; ++m) s.ops[r].push_back(Op::backward(m, 0));
  }
  return s;
}

Schedule one_f_one_b(int ranks, int microbatches) {
  check_shape("1f1b", ranks, microbatches);
  Schedule s = detail::linear_placement(ScheduleKind::one_f_one_b, ranks, microbatches);
  for (int r = 0; r < ranks; ++r) {
    std::vector<Op>& ops = s.ops[r];
    // Rank r starts ranks-1-r forwards ahead, enough to keep the later ranks
    // fed until the first gradient comes back; then one F per B.
    const int warmup = std::min(ranks - 1 - r, microbatches);
    int f = 0, b = 0;
    while (f < warmup) ops.push_back(Op::forward(f++, 0));
    while (f < microbatches) {
      ops.push_back(Op::forward(f++, 0));
      ops.push_back(Op::backward(b++, 0));
    }
    while (b < microbatches) ops.push_back(Op::backward(b++, 0));
  }
  return s;
}

Schedule zb_h1(int ranks, int microbatches) {
  check_shape("zb-h1", ranks, microbatches);
  Schedule s = detail::linear_placement(ScheduleKind::zb_h1, ranks, microbatches);
  for (int r = 0; r < ranks; ++r) {
    std::vector<Op>& ops = s.ops[r];
    // The 1F1B order, with only the input-gradient half (Bi) on the path the
    // gradient travels towards rank 0. Rank r holds back r weight-gradient
    // passes (oldest first, as in the zero-bubble paper's ZB-H1): its last Bi
    // ends about r backward hops before rank 0 finishes, and the deferred W's
    // fill that tail instead of delaying the gradients earlier. Rank 0 defers
    // nothing and runs full backwards.
    const int deferred = r;
    const int warmup = std::min(ranks - 1 - r, microbatches);
    int f = 0, b = 0, w = 0;
    auto backward = [&] {
      if (deferred == 0) {
        ops.push_back(Op::backward(b++, 0));
        ++w;
        return;
      }
      ops.push_back(Op::input_grad(b++, 0));
      if (b - w > deferred) ops.push_back(Op::weight_grad(w++, 0));
    };
    while (f < warmup) ops.push_back(Op::forward(f++, 0));
    while (f < microbatches) {
      ops.push_back(Op::forward(f++, 0));
      backward();
    }
    while (b < microbatches) backward();
    while (w < microbatches) ops.push_back(Op::weight_grad(w++, 0));
  }
  return s;
}

}  // namespace epx::pipeline
