// One completion request as the engine and the HTTP front end share it: the
// front end fills the spec and reads the output as it grows; the engine
// (rank 0's thread) appends to the output and marks it done. Every field
// below the mutex is guarded by it.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "serve/sampler.hpp"

namespace epx::serve {

struct RequestSpec {
  std::vector<std::int32_t> prompt;  // token ids, each < V, at least one
  int max_tokens = 16;               // >= 1; prompt + max_tokens <= the context
  SamplingParams sampling;
  std::uint64_t seed = 0;
  std::vector<std::string> stop;  // stop strings (byte vocabulary only)
};

class Request {
 public:
  explicit Request(RequestSpec s) : spec(std::move(s)) {}
  const RequestSpec spec;
  const std::chrono::steady_clock::time_point arrival = std::chrono::steady_clock::now();
  // Set by the front end when its client is gone: the engine drops the
  // request at the next step and frees its cache.
  std::atomic<bool> cancelled{false};

  std::mutex mu;
  std::condition_variable cv;        // notified on every change below
  std::string text;                  // the text handed out so far (pieces concatenated)
  std::vector<std::int32_t> tokens;  // generated ids so far
  bool done = false;
  std::string finish_reason;  // "length" | "stop" | "cancelled" | "error"
  std::string error;          // with finish_reason "error": why
  std::chrono::steady_clock::time_point first_token_at, done_at;
};

}  // namespace epx::serve
