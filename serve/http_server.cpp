#include "serve/http_server.hpp"

#include <atomic>
#include <cerrno>
#include <cstring>
#include <ctime>

#include <httplib.h>

#include "core/check.hpp"
#include "core/log.hpp"

namespace epx::serve {

namespace {

// Connections the kernel holds before httplib accepts them: every client of
// a burst (epx-bench serve starts 32 at once).
constexpr int kListenBacklog = 1024;

std::atomic<std::int64_t> next_id{0};

void send_error(httplib::Response& res, const ApiError& e) {
  res.status = e.status;
  res.set_content(error_json(e), "application/json");
}

ApiError unavailable(const std::string& message, const std::string& type) {
  ApiError e;
  e.status = 503;
  e.message = message;
  e.type = type;
  return e;
}

std::string sse(const std::string& json) {
  return "data: " + json + "\n\n";
}

// The request's output past (text_at, tokens_at), under its lock.
struct Progress {
  std::string text;
  std::vector<std::int32_t> tokens;
  bool done = false;
  std::string reason, error;
};

Progress take(Request& r, std::size_t& text_at, std::size_t& tokens_at, bool wait) {
  std::unique_lock<std::mutex> l(r.mu);
  if (wait && !r.done && r.text.size() == text_at && r.tokens.size() == tokens_at)
    r.cv.wait_for(l, std::chrono::milliseconds(100));
  Progress p;
  p.text = r.text.substr(text_at);
  p.tokens.assign(r.tokens.begin() + static_cast<std::ptrdiff_t>(tokens_at), r.tokens.end());
  text_at = r.text.size();
  tokens_at = r.tokens.size();
  p.done = r.done;
  p.reason = r.finish_reason;
  p.error = r.error;
  return p;
}

ApiError failure(const Progress& p) {
  return p.reason == "error" ? unavailable("the engine failed: " + p.error, "server_error")
                             : unavailable("the request was cancelled: the server is shutting down",
                                           "server_error");
}

}  // namespace

HttpServer::HttpServer(Scheduler& scheduler, Metrics& metrics, HttpOptions options)
    : scheduler_(scheduler),
      metrics_(metrics),
      options_(std::move(options)),
      server_(std::make_unique<httplib::Server>()) {
  const int threads = options_.threads;
  server_->new_task_queue = [threads] {
    return new httplib::ThreadPool(static_cast<size_t>(threads));
  };
  server_->set_keep_alive_timeout(1);  // stop() waits for idle keep-alive connections
  // httplib's default also sets SO_REUSEPORT, with which a second server on
  // a port in use binds too and the two share the connections: only
  // SO_REUSEADDR (a restart may bind while old connections are in TIME_WAIT).
  server_->set_socket_options([this](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    listen_socket_ = static_cast<int>(sock);
  });
  // Each streamed event leaves at once: with Nagle's algorithm the events of
  // consecutive tokens wait for the client's ACK and arrive together.
  server_->set_tcp_nodelay(true);
  server_->set_payload_max_length(std::size_t{16} << 20);
  routes();
}

HttpServer::~HttpServer() {
  stop();
}

int HttpServer::bind() {
  const int port = options_.port == 0
                       ? server_->bind_to_any_port(options_.host)
                       : (server_->bind_to_port(options_.host, options_.port) ? options_.port : -1);
  EPX_CHECK(port > 0, InvalidArgument, "epx-serve: cannot listen on ", options_.host, ":",
            options_.port, " (in use, or not an address of this host)");
  // Debian's cpp-httplib is a compiled library that listens with a backlog
  // of 5 (CPPHTTPLIB_LISTEN_BACKLOG cannot be changed from here). 32 clients
  // connecting at once overflow it: the dropped handshakes are retried after
  // 1 s, and a request whose bytes arrive later than the first keep-alive
  // wait (1 s, below) is closed unanswered (epx-bench serve lost 0-6 of 64
  // requests at 32 clients, TTFT p99 1 s where p50 was 10 ms). On Linux a
  // second listen() on the bound socket sets the new backlog (the kernel
  // caps it at net.core.somaxconn).
  if (listen_socket_ >= 0 && ::listen(listen_socket_, kListenBacklog) != 0)
    EPX_LOG(Warn, Launch, "epx-serve: could not raise the listen backlog to ", kListenBacklog, ": ",
            std::strerror(errno), "; clients that connect at once may wait 1 s");
  return port;
}

void HttpServer::start() {
  thread_ = std::thread([this] { server_->listen_after_bind(); });
}

void HttpServer::stop() {
  if (!thread_.joinable()) return;
  server_->stop();
  thread_.join();
}

void HttpServer::routes() {
  server_->Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    const bool draining = scheduler_.draining();
    res.status = draining ? 503 : 200;
    res.set_content(draining ? R"({"status":"draining"})" : R"({"status":"ok"})",
                    "application/json");
  });
  server_->Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(options_.models_body, "application/json");
  });
  server_->Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics_.prometheus(), "text/plain; version=0.0.4");
  });
  server_->Post("/v1/completions", [this](const httplib::Request& req, httplib::Response& res) {
    CompletionRequest parsed;
    ApiError err;
    if (!parse_completion_request(req.body, options_.limits, parsed, err)) {
      metrics_.request_rejected("invalid");
      return send_error(res, err);
    }
    const auto prompt_tokens = static_cast<std::int64_t>(parsed.spec.prompt.size());
    auto r = std::make_shared<Request>(std::move(parsed.spec));
    const Admission a = scheduler_.submit(r);
    if (a != Admission::accepted) {
      const bool full = a == Admission::queue_full;
      metrics_.request_rejected(full ? "queue_full" : "draining");
      if (full) res.set_header("Retry-After", "1");
      return send_error(
          res, full ? unavailable("the server is busy: the request queue is full; retry later",
                                  "server_overloaded")
                    : unavailable("the server is shutting down", "server_shutting_down"));
    }
    CompletionInfo info{"cmpl-" + std::to_string(next_id++),
                        static_cast<std::int64_t>(std::time(nullptr)), options_.model_name};
    if (!parsed.stream) {
      std::size_t text_at = 0, tokens_at = 0;
      Progress all;
      for (;;) {
        Progress p = take(*r, text_at, tokens_at, true);
        all.text += p.text;
        all.tokens.insert(all.tokens.end(), p.tokens.begin(), p.tokens.end());
        if (p.done) {
          all.done = true;
          all.reason = p.reason;
          all.error = p.error;
          break;
        }
      }
      if (all.reason != "length" && all.reason != "stop") return send_error(res, failure(all));
      return res.set_content(completion_json(info, all.text, all.tokens, all.reason, prompt_tokens),
                             "application/json");
    }
    // Streaming: one event per piece of output, as it comes.
    struct State {
      std::size_t text_at = 0, tokens_at = 0;
      std::int64_t completion = 0;
    };
    auto st = std::make_shared<State>();
    res.set_header("Cache-Control", "no-cache");
    res.set_chunked_content_provider(
        "text/event-stream",
        [r, st, info, prompt_tokens](size_t, httplib::DataSink& sink) {
          const Progress p = take(*r, st->text_at, st->tokens_at, true);
          st->completion += static_cast<std::int64_t>(p.tokens.size());
          std::string out;
          const bool ok = !p.done || p.reason == "length" || p.reason == "stop";
          if (!ok) {
            out = sse(error_json(failure(p)));
          } else if (!p.text.empty() || !p.tokens.empty() || p.done) {
            out = sse(chunk_json(info, p.text, p.tokens, p.done ? p.reason : "", prompt_tokens,
                                 st->completion));
          }
          if (p.done) out += "data: [DONE]\n\n";
          if (!out.empty() && !sink.write(out.data(), out.size())) {
            r->cancelled = true;  // the client is gone
            return false;
          }
          if (p.done) sink.done();
          return true;
        },
        [r](bool success) {
          if (!success) r->cancelled = true;
        });
  });
}

}  // namespace epx::serve
