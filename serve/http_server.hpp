// epx-serve's HTTP front end on rank 0 (cpp-httplib): POST /v1/completions
// (serve/api.hpp's format; stream: server-sent events ending with
// `data: [DONE]`), GET /v1/models, GET /health and GET /metrics. Handlers run on httplib's
// thread pool and only talk to the Scheduler; the engine's thread does the
// rest. A full queue answers 503 with Retry-After; a stream whose client
// goes away cancels its request, which frees its KV cache.
#pragma once

#include <memory>
#include <string>
#include <thread>

#include "serve/api.hpp"
#include "serve/metrics.hpp"
#include "serve/scheduler.hpp"

namespace httplib {
class Server;
}

namespace epx::serve {

struct HttpOptions {
  std::string host = "127.0.0.1";
  int port = 8000;  // 0: any free port
  std::string model_name;
  std::string models_body;  // GET /v1/models (serve/model_cost.hpp's models_json)
  ApiLimits limits;
  int threads = 16;  // handler threads: every accepted request holds one
};

class HttpServer {
 public:
  HttpServer(Scheduler& scheduler, Metrics& metrics, HttpOptions options);
  ~HttpServer();
  // Binds; returns the port. Throws InvalidArgument naming host:port on failure.
  int bind();
  void start();  // serves on its own thread
  void stop();   // stops listening, waits for the handlers

 private:
  void routes();
  Scheduler& scheduler_;
  Metrics& metrics_;
  HttpOptions options_;
  std::unique_ptr<httplib::Server> server_;
  int listen_socket_ = -1;  // the last socket httplib made to listen on (bind())
  std::thread thread_;
};

}  // namespace epx::serve
