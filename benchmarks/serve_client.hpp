// epx-bench serve's side of HTTP: a client of epx-serve's OpenAI-style API
// (cpp-httplib), and the launcher of a server when no --url is given.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

namespace epx::bench {

struct Endpoint {
  std::string host;
  int port = 0;
};

// "http://HOST:PORT" (the path, if any, ignored). Throws UsageError.
Endpoint parse_url(const std::string& url);

// GET path's body; throws std::runtime_error naming the URL on failure.
std::string get_text(const Endpoint& at, const std::string& path);
// The same, parsed as JSON.
nlohmann::json get_json(const Endpoint& at, const std::string& path);

// Decode step time by path, from /metrics' epx_decode_step_seconds_{sum,count}{mode="..."}.
struct StepTimes {
  std::vector<std::string> modes;
  std::vector<double> seconds;
  std::vector<double> count;
};
StepTimes decode_step_times(const std::string& metrics);
// after - before, mode by mode (modes missing before count from 0).
StepTimes operator-(const StepTimes& after, const StepTimes& before);

// One streamed completion, timed from the send on the steady clock.
struct Completion {
  bool ok = false;
  std::string error;        // when !ok
  double ttft = 0;          // seconds to the first event with tokens
  double last = 0;          // seconds to the last token's event
  std::int64_t tokens = 0;  // generated ids received
  std::string finish_reason;
};

// POST /v1/completions with `prompt` (token ids), greedy, stream: true.
Completion stream_completion(const Endpoint& at, const std::vector<std::int32_t>& prompt,
                             int max_tokens);

// `epxrun -n RANKS -- epx-serve --port 0 ARGS...` from the directory of this
// executable, with the MPI variables of this process's own launch removed
// from its environment; its first line gives the port and rank 0's pid.
class LaunchedServer {
 public:
  LaunchedServer(int ranks, const std::vector<std::string>& serve_args, double start_timeout_s);
  ~LaunchedServer();  // stop() if not yet stopped
  LaunchedServer(const LaunchedServer&) = delete;
  LaunchedServer& operator=(const LaunchedServer&) = delete;
  const Endpoint& endpoint() const { return endpoint_; }
  // SIGTERM to rank 0 (a drain), then waits up to timeout_s for the job;
  // returns its exit status (or -1 when it had to be killed).
  int stop(double timeout_s = 120);

 private:
  pid_t child_ = -1;
  pid_t rank0_ = -1;
  int out_fd_ = -1;
  Endpoint endpoint_;
  std::thread reader_;
};

}  // namespace epx::bench
