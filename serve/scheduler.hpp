// Rank 0's side of continuous batching: the bounded queue, admission at step
// boundaries, the plan of each step and what its logits mean for each
// request. No MPI here; Engine moves plans and logits between ranks.
//
// Up to max_batch requests run and max_queue more wait; submit() refuses
// past that (the front end's 503). Admission is first come, first served: the queue's head joins
// when fewer than max_batch requests run and some rank has the KV blocks for its prompt +
// max_tokens free (the rank with the most free blocks, ties: the lowest); later requests wait
// behind it. Each step, every running request either prefills its next chunk of at most
// prefill_chunk prompt tokens or decodes one token; the logits of a prompt's last position give the
// first generated token. A finished or cancelled request's blocks are freed by the next step's
// plan.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <vector>

#include "serve/metrics.hpp"
#include "serve/request.hpp"
#include "serve/step_plan.hpp"
#include "serve/text.hpp"

namespace epx::serve {

struct SchedulerOptions {
  int num_ranks = 1;
  int blocks_per_rank = 0;
  int block_size = 16;
  int max_batch = 8;
  int max_queue = 64;
  int prefill_chunk = 64;
  int vocab_size = 256;
};

enum class Admission { accepted, queue_full, draining };

class Scheduler {
 public:
  Scheduler(const SchedulerOptions& options, Metrics& metrics);

  // Any thread.
  Admission submit(std::shared_ptr<Request> request);
  void drain();     // refuse new requests; shut down once everything accepted has finished
  void stop_now();  // refuse new requests, end every accepted one ("cancelled"), shut down
  bool draining() const;

  // The engine's thread. Waits up to `wait` for work when there is none.
  StepPlan next_plan(std::chrono::milliseconds wait);
  // logits: every rank's rows concatenated by rank, each rank's in plan order.
  void apply(const StepPlan& plan, const std::vector<float>& logits);
  // Ends every request with an error (the engine failed).
  void fail_all(const std::string& why);

 private:
  struct Active {
    std::shared_ptr<Request> request;
    std::int64_t seq = 0;
    int owner = 0;
    std::int64_t prefilled = 0;  // prompt tokens in the cache
    std::int64_t fed = 0;        // generated tokens fed back (in the cache)
    Rng rng;
    CompletionText text;
    std::chrono::steady_clock::time_point last_token;
    bool finished = false;
  };
  void admit();
  void finish(Active& a, const std::string& reason);
  std::int64_t blocks_for(const Request& r) const;
  std::vector<std::int64_t> blocks_used() const;  // per rank

  SchedulerOptions o_;
  Metrics& metrics_;
  mutable std::mutex mu_;  // queue_, draining_, stop_, running_count_
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Request>> queue_;
  bool draining_ = false, stop_ = false;
  int running_count_ = 0;  // running_.size() as of the last step, for submit()
  // The engine thread's own.
  std::vector<std::unique_ptr<Active>> running_;
  std::vector<std::int64_t> free_blocks_;  // per rank
  std::vector<Release> releases_;
  std::int64_t next_seq_ = 0;
};

}  // namespace epx::serve
