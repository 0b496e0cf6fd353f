// LoadTracker (include/epx/balancer.hpp): per-step counts added locally,
// summed over the group with a polled MPI_Iallreduce (a blocking collective
// could wait forever for a rank that is gone), kept in a ring of `window`
// steps with a running sum.
#include <mpi.h>

#include <algorithm>
#include <epx/balancer.hpp>
#include <memory>
#include <string>
#include <vector>

#include "core/agree.hpp"
#include "core/check.hpp"
#include "core/config.hpp"
#include "core/log.hpp"
#include "core/wait.hpp"

namespace epx::balancer {

struct LoadTracker::State {
  Group group;
  int layers = 0, experts = 0, window = 0;
  double timeout_s = 0;
  std::vector<std::int64_t> current;            // [L*E] this step, this rank
  std::vector<std::vector<std::int64_t>> ring;  // [window][L*E] summed steps
  std::vector<std::int64_t> sum;                // [L*E] sum of the ring
  int head = 0;                                 // next ring entry to write
  int steps = 0;
  std::string error;  // the first bad add() of this step, for end_step
};

namespace {

template <class T>
bool add_counts(const T* v, std::int64_t* dst, int n, int layer, std::string& error) {
  for (int e = 0; e < n; ++e) {
    if (v[e] < 0) {
      error = core::concat("LoadTracker::add: layer ", layer, ": num_tokens_per_expert[", e,
                           "] = ", v[e], ", expected >= 0");
      return false;
    }
  }
  for (int e = 0; e < n; ++e) dst[e] += v[e];
  return true;
}

// Sums `data` over the group in place, waiting at most until `deadline`.
void sum_over_group(Group& group, std::vector<std::int64_t>& data, const core::Deadline& deadline) {
  EPX_LOG(Trace, Balancer, "LoadTracker::end_step: sum of ", data.size(), " counts over ",
          group.size(), " ranks");
  // An aborted group (a failure in another module, or the user's abort on
  // any rank) stops the balancer too, before the sum.
  EPX_CHECK(!group.aborted(), PeerFailure, "LoadTracker::end_step: the group was aborted (",
            group.abort_reason(), ")");
  // Both buffers on the heap, leaked if the sum is given up: MPI may read and
  // write them whenever the other ranks come.
  auto in = std::make_unique<std::vector<std::int64_t>>(data);
  auto out = std::make_unique<std::vector<std::int64_t>>(data.size());
  MPI_Request request;
  MPI_Iallreduce(in->data(), out->data(), static_cast<int>(data.size()), MPI_INT64_T, MPI_SUM,
                 group.comm(), &request);
  const auto give_up = [&] {
    static_cast<void>(in.release());
    static_cast<void>(out.release());
  };
  core::Backoff backoff;
  for (;;) {
    int done = 0;
    MPI_Test(&request, &done, MPI_STATUS_IGNORE);
    if (done) break;
    if (group.aborted()) {
      give_up();
      EPX_THROW(PeerFailure, "LoadTracker::end_step: the group was aborted (", group.abort_reason(),
                ")");
    }
    if (deadline.expired()) {
      give_up();
      // The request stays pending and the communicator is unusable: poison
      // the group so that every other wait on it fails fast.
      const std::string why =
          core::concat("LoadTracker::end_step: timed out after ", deadline.seconds(),
                       " s in the sum of expert counts (a rank did not call end_step)");
      group.abort(why);
      EPX_THROW(Timeout, why);
    }
    backoff.pause();
  }
  data.swap(*out);
}

}  // namespace

LoadTracker::LoadTracker(Group group, int num_layers, int num_experts, int window,
                         double timeout_s) {
  EPX_CHECK_GE(num_layers, 1, InvalidArgument, "LoadTracker");
  EPX_CHECK_GE(num_experts, 1, InvalidArgument, "LoadTracker");
  EPX_CHECK_GE(window, 1, InvalidArgument, "LoadTracker");
  timeout_s = core::resolve_timeout_s(timeout_s, "LoadTracker: timeout_s");
  EPX_CHECK(static_cast<std::int64_t>(num_layers) * num_experts <= INT32_MAX, InvalidArgument,
            "LoadTracker: num_layers x num_experts = ",
            static_cast<std::int64_t>(num_layers) * num_experts, ", expected <= 2^31 - 1");
  state_ = std::make_shared<State>(
      State{std::move(group), num_layers, num_experts, window, timeout_s, {}, {}, {}, 0, 0, {}});
  const std::size_t n = static_cast<std::size_t>(num_layers) * num_experts;
  state_->current.assign(n, 0);
  state_->sum.assign(n, 0);
  state_->ring.assign(window, std::vector<std::int64_t>(n, 0));
}

void LoadTracker::add(int layer, const Tensor& counts) {
  State& s = *state_;
  std::string error;
  if (layer < 0 || layer >= s.layers) {
    error = core::concat("LoadTracker::add: layer = ", layer, ", expected 0 <= layer < ", s.layers);
  } else if (!counts.defined() || counts.device() != Device::cpu || counts.ndim() != 1 ||
             counts.dim(0) != s.experts ||
             (counts.dtype() != DType::i32 && counts.dtype() != DType::i64)) {
    error = core::concat("LoadTracker::add: layer ", layer, ": num_tokens_per_expert is ",
                         counts.defined() ? counts.describe() : std::string("undefined"),
                         ", expected a host i32 or i64 tensor [", s.experts, "]");
  } else {
    std::int64_t* dst = s.current.data() + static_cast<std::size_t>(layer) * s.experts;
    if (counts.dtype() == DType::i32)
      add_counts(counts.data<std::int32_t>(), dst, s.experts, layer, error);
    else
      add_counts(counts.data<std::int64_t>(), dst, s.experts, layer, error);
  }
  if (error.empty()) return;
  if (s.error.empty()) s.error = error;
  EPX_THROW(InvalidArgument, error);
}

void LoadTracker::end_step() {
  State& s = *state_;
  const core::Deadline deadline(s.timeout_s);
  const std::string error = std::move(s.error);
  s.error.clear();
  try {
    core::agree_on_error(s.group.comm(), error, ErrorCode::InvalidArgument, deadline,
                         "LoadTracker::end_step");
  } catch (const Error&) {
    std::fill(s.current.begin(), s.current.end(), 0);  // the failed step is dropped
    throw;
  }
  sum_over_group(s.group, s.current, deadline);
  std::vector<std::int64_t>& slot = s.ring[s.head];
  for (std::size_t i = 0; i < slot.size(); ++i) s.sum[i] += s.current[i] - slot[i];
  slot.swap(s.current);
  std::fill(s.current.begin(), s.current.end(), 0);
  s.head = (s.head + 1) % s.window;
  s.steps = std::min(s.steps + 1, s.window);
}

Tensor LoadTracker::load() const {
  const State& s = *state_;
  Tensor out = Tensor::empty({s.layers, s.experts}, DType::i64);
  std::copy(s.sum.begin(), s.sum.end(), out.data<std::int64_t>());
  return out;
}

int LoadTracker::steps() const {
  return state_->steps;
}

}  // namespace epx::balancer
