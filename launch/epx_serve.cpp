// epx-serve: the trained model behind an OpenAI-style HTTP API on rank 0,
// with every rank stepping the engine (EP over all ranks).
//
//   epxrun -n 4 -- epx-serve --model CKPT [--config YAML] [--host 127.0.0.1] [--port 8000]
//       [--max-batch N] [--kv-memory MiB] [--max-context N] [--deterministic]
//
// SIGINT or SIGTERM drains: new requests get 503, the accepted ones finish,
// then every rank exits 0. A second signal cancels what is left.
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <iostream>
#include <thread>

#include <epx/error.hpp>

#include "core/config.hpp"
#include "launch/options.hpp"
#include "launch/serve_model.hpp"
#include "serve/http_server.hpp"
#include "serve/model_cost.hpp"

using namespace epx;

namespace {

constexpr const char* kUsage =
    "usage: epx-serve --model CKPT [--config YAML] [--host ADDR] [--port N] [engine flags]\n"
    "Serves POST /v1/completions, GET /v1/models, GET /health and GET /metrics on rank 0\n"
    "(epxrun -n N -- ...).\n"
    "  --host ADDR         the address to listen on (default 127.0.0.1)\n"
    "  --port N            the port (default 8000; 0: any free port, printed at start)\n";

struct Args {
  launch::ServeFlags flags;
  std::string host = "127.0.0.1";
  int port = 8000;
};

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    if (launch::parse_serve_flag(a.flags, argc, argv, i, kUsage)) continue;
    const std::string s = argv[i];
    if (s == "--host") {
      a.host = launch::flag_value(argc, argv, i);
    } else if (s == "--port") {
      a.port =
          static_cast<int>(launch::parse_int_flag(s, launch::flag_value(argc, argv, i), 0, 65535));
    } else {
      throw launch::UsageError("unknown option '" + s + "'");
    }
  }
  if (a.flags.model.empty()) throw launch::UsageError("--model is required");
  return a;
}

std::atomic<int> g_signals{0};

void on_signal(int) {
  g_signals.fetch_add(1);
}

int run_server(const Args& a, Group& world) {
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);

  const double timeout_s = core::params::timeout_s.get();
  launch::ServedModel m = launch::load_served_model(a.flags, world, timeout_s);
  serve::Engine engine(*m.model, world, m.engine);
  if (world.rank() == 0 && !engine.decode_modes().empty())
    std::fprintf(stderr, "epx-serve: %s\n", engine.decode_modes().c_str());
  if (world.rank() != 0) {
    engine.run();  // until rank 0 plans the shutdown
    return 0;
  }

  serve::HttpOptions ho;
  ho.host = a.host;
  ho.port = a.port;
  ho.model_name = m.name;
  ho.models_body = serve::models_json(m.name, m.config.model, world.size());
  ho.limits = {m.config.model.vocab_size, m.engine.max_context};
  ho.threads = std::min(256, a.flags.max_batch + a.flags.max_queue + 8);
  serve::HttpServer http(*engine.scheduler(), *engine.metrics(), ho);
  // Binding is rank 0's alone; its failure reaches the others as the
  // shutdown plan, so every rank stops.
  int port = -1;
  std::string bind_error;
  try {
    port = http.bind();
  } catch (const std::exception& e) {
    bind_error = e.what();
    engine.scheduler()->stop_now();
  }
  std::atomic<bool> engine_done{false};
  std::thread watcher([&] {
    int seen = 0;
    while (!engine_done) {
      const int n = g_signals.load();
      if (n > seen) {
        seen = n;
        std::fprintf(stderr, "epx-serve: %s\n",
                     n == 1 ? "signal: draining (new requests get 503; a second signal cancels)"
                            : "signal: cancelling the requests in flight");
        if (n == 1) engine.scheduler()->drain();
        if (n >= 2) engine.scheduler()->stop_now();
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  });
  if (bind_error.empty()) {
    http.start();
    std::printf(
        "epx-serve: listening on http://%s:%d (pid %d, %d ranks, model %s, context %d, "
        "KV %d blocks of %d positions per rank, %s dispatch%s)\n",
        a.host.c_str(), port, static_cast<int>(getpid()), world.size(), m.name.c_str(),
        m.engine.max_context, engine.blocks_per_rank(), m.engine.block_size,
        m.engine.fp8_dispatch ? "fp8" : "f32", m.engine.deterministic ? ", deterministic" : "");
    std::fflush(stdout);
  }
  try {
    engine.run();
  } catch (...) {
    engine_done = true;
    watcher.join();
    http.stop();
    throw;
  }
  engine_done = true;
  watcher.join();
  http.stop();
  if (!bind_error.empty()) throw Error(ErrorCode::InvalidArgument, bind_error);
  std::printf("epx-serve: stopped\n");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return launch::program_main("epx-serve", argc, argv, parse, run_server);
}
