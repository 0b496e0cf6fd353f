// epx-serve's engine: every rank holds the dense weights, its share of the
// routed experts (EP over all ranks) and the KV cache of the sequences it
// owns; rank 0 also holds the scheduler. Each step rank 0 broadcasts the
// plan, every rank runs its segments (attention on its own sequences, MoE
// through comm::Buffer's normal-mode dispatch and combine over all ranks),
// and rank 0 gathers the logits and samples. Prefill runs in normal mode;
// decode in normal or low-latency mode (low_latency_decode), the latter
// optionally with two micro-batches per step that overlap compute and
// all-to-all (overlap_decode).
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <vector>

#include <epx/comm.hpp>
#include <epx/group.hpp>

#include "model/model.hpp"
#include "serve/control.hpp"
#include "serve/forward.hpp"
#include "serve/kv_cache.hpp"
#include "serve/metrics.hpp"
#include "serve/mode_choice.hpp"
#include "serve/scheduler.hpp"
#include "train/expert_balancer.hpp"

namespace epx::serve {

struct EngineOptions {
  int max_batch = 8;                             // requests running at once
  int max_queue = 64;                            // requests waiting; past it, refused
  std::size_t kv_bytes = std::size_t{64} << 20;  // KV cache per rank
  int block_size = 16;                           // positions per KV block
  int max_context = 0;                           // prompt + max_tokens limit (> 0)
  int prefill_chunk = 64;                        // prompt tokens per request per step
  bool deterministic = false;                    // batch-invariant GEMMs (serve/forward.hpp)
  // Decode steps (every segment one token) through the Buffer's low-latency
  // dispatch and combine instead of the normal mode (the same bits).
  bool low_latency_decode = false;
  // Instead: each decode step takes the mode that a start-up measurement
  // found faster for its batch size (serve/mode_choice.hpp).
  bool auto_decode = false;
  // With low_latency_decode: two micro-batches per decode step, one's
  // dispatch or combine in flight while the other computes (the same bits).
  // alternate: every other decode step with it, the others without (to
  // measure both in one run: epx_decode_step_seconds in /metrics).
  // Off by default: on this CPU path it is slower (docs/serve.md).
  enum class Overlap { off, on, alternate };
  Overlap overlap_decode = Overlap::off;
  // Both dispatch paths (prefill and decode, normal and low-latency) send
  // e4m3 rows with per-token 1x128 f32 scales, and the experts take them
  // dequantised, as the training forward with parallel.fp8_dispatch; the
  // combine and the shared experts stay f32. Needs model.hidden_size a
  // multiple of 128 (InvalidArgument on every rank otherwise).
  bool fp8_dispatch = false;
  double timeout_s = 300;  // every wait on another rank
  // Rank 0 sends a plan at least this often, even with nothing to do, so
  // that the other ranks' wait for it stays bounded by timeout_s.
  std::chrono::milliseconds heartbeat{100};
  // Live expert balancing (the config's balancer: section; built over the
  // world by launch/serve_model.cpp, which gives the model its placement's
  // slots): every engine step's expert counts go into it, and every
  // balancer.every steps the experts move to a new placement between two
  // steps (weights only). The outputs do not change (serve/forward.hpp);
  // with --deterministic not a bit. nullptr: off.
  train::ExpertBalancer* balancer = nullptr;
};

class Engine {
 public:
  // Collective over `world`. `model` holds the experts of rank world.rank()
  // of world.size(), weights loaded. Throws InvalidArgument (on every rank)
  // when the KV cache cannot hold one request of max_context positions.
  Engine(model::Model& model, Group& world, const EngineOptions& options);
  ~Engine();

  Scheduler* scheduler() noexcept { return scheduler_.get(); }  // rank 0 only, else null
  Metrics* metrics() noexcept { return metrics_.get(); }        // rank 0 only, else null
  int blocks_per_rank() const noexcept { return cache_->num_blocks(); }
  const EngineOptions& options() const noexcept { return options_; }
  // With auto_decode: the measured choice per batch size, one line; else empty.
  std::string decode_modes() const { return options_.auto_decode ? choice_.describe() : ""; }

  // Collective: runs steps until rank 0's scheduler plans the shutdown.
  // On a failure rank 0 ends every request with the error, then it throws.
  void run();

 private:
  void step(const StepPlan& plan);
  // Collective: the step's expert counts into the balancer; a rebalance when due.
  void balance(const std::vector<std::int64_t>& counts);
  model::Model& model_;
  EngineOptions options_;
  int rank_ = 0, size_ = 1;
  Control control_;
  std::unique_ptr<comm::Buffer> buffer_;
  std::unique_ptr<KvCache> cache_;
  std::unique_ptr<Forward> forward_;
  std::unique_ptr<Metrics> metrics_;
  std::unique_ptr<Scheduler> scheduler_;
  std::vector<float> logits_;
  std::int64_t decode_steps_ = 0;  // the same count on every rank
  std::int64_t steps_ = 0;         // engine steps with tokens, the same on every rank
  DecodeModeChoice choice_;
};

}  // namespace epx::serve
