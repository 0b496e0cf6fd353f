// epx-generate: one completion offline, through the same engine, scheduler
// and request rules as epx-serve (the request is checked as a
// /v1/completions body would be), with no HTTP.
//
//   epxrun -n 2 -- epx-generate --model CKPT --prompt TEXT --max-tokens N [--temperature T]
//       [--top-p P] [--seed S] [--stop STR]... [--json] [engine flags]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <memory>

#include <nlohmann/json.hpp>

#include <epx/error.hpp>

#include "core/config.hpp"
#include "launch/options.hpp"
#include "launch/serve_model.hpp"
#include "serve/api.hpp"

using namespace epx;

namespace {

constexpr const char* kUsage =
    "usage: epx-generate --model CKPT --prompt TEXT [--max-tokens N] [--temperature T] [--top-p "
    "P]\n"
    "                    [--seed S] [--stop STR]... [--json] [engine flags]\n"
    "Generates one completion of TEXT on every rank's share of the model (epxrun -n N -- ...).\n"
    "  --prompt TEXT       the prompt (bytes of TEXT for a byte vocabulary)\n"
    "  --prompt-ids IDS    the prompt as comma-separated token ids instead\n"
    "  --max-tokens N      tokens to generate (default 16)\n"
    "  --temperature T     0: greedy (default 0 here; the HTTP API's default is 1)\n"
    "  --top-p P           nucleus sampling (default 1)\n"
    "  --seed S            the sampling seed (default: random)\n"
    "  --stop STR          stop before STR (repeatable, at most 4)\n"
    "  --json              print the /v1/completions response JSON instead of the text\n"
    "  --batch N           run N copies together (seeds S, S+1, ...; for timing), print the first\n"
    "Timings go to stderr: time to the first token, and decode tokens/s.\n";

struct Args {
  launch::ServeFlags flags;
  nlohmann::json body = nlohmann::json::object();
  bool json = false;
  int batch = 1;
};

Args parse(int argc, char** argv) {
  Args a;
  a.body["max_tokens"] = 16;
  a.body["temperature"] = 0;
  for (int i = 1; i < argc; ++i) {
    if (launch::parse_serve_flag(a.flags, argc, argv, i, kUsage)) continue;
    const std::string s = argv[i];
    const auto value = [&]() { return launch::flag_value(argc, argv, i); };
    if (s == "--prompt") {
      a.body["prompt"] = value();
    } else if (s == "--prompt-ids") {
      nlohmann::json ids = nlohmann::json::array();
      const std::string v = value();
      std::size_t at = 0;
      while (at <= v.size()) {
        const std::size_t comma = std::min(v.find(',', at), v.size());
        ids.push_back(
            launch::parse_int_flag("--prompt-ids", v.substr(at, comma - at), 0, 1L << 31));
        at = comma + 1;
      }
      a.body["prompt"] = ids;
    } else if (s == "--max-tokens") {
      a.body["max_tokens"] = launch::parse_int_flag(s, value(), 1, 1L << 24);
    } else if (s == "--temperature") {
      a.body["temperature"] = launch::parse_double_flag(s, value());
    } else if (s == "--top-p") {
      a.body["top_p"] = launch::parse_double_flag(s, value());
    } else if (s == "--seed") {
      a.body["seed"] = launch::parse_int_flag(s, value(), 0, LONG_MAX);
    } else if (s == "--stop") {
      if (!a.body.contains("stop")) a.body["stop"] = nlohmann::json::array();
      a.body["stop"].push_back(value());
    } else if (s == "--batch") {
      a.batch = static_cast<int>(launch::parse_int_flag(s, value(), 1, 4096));
    } else if (s == "--json") {
      a.json = true;
    } else {
      throw launch::UsageError("unknown option '" + s + "'");
    }
  }
  if (a.flags.model.empty()) throw launch::UsageError("--model is required");
  if (!a.body.contains("prompt"))
    throw launch::UsageError("--prompt (or --prompt-ids) is required");
  return a;
}

int generate(const Args& a, Group& world) {
  const double timeout_s = core::params::timeout_s.get();
  launch::ServedModel m = launch::load_served_model(a.flags, world, timeout_s);
  // Checked on every rank (the same verdict everywhere), used on rank 0.
  serve::CompletionRequest req;
  serve::ApiError err;
  const serve::ApiLimits limits{m.config.model.vocab_size, m.engine.max_context};
  if (!serve::parse_completion_request(a.body.dump(), limits, req, err))
    throw Error(ErrorCode::InvalidArgument, err.message);
  if (a.batch > m.engine.max_batch) m.engine.max_batch = a.batch;
  serve::Engine engine(*m.model, world, m.engine);
  if (world.rank() == 0 && !engine.decode_modes().empty())
    std::fprintf(stderr, "epx-generate: %s\n", engine.decode_modes().c_str());
  std::vector<std::shared_ptr<serve::Request>> all;
  const auto start = std::chrono::steady_clock::now();
  if (world.rank() == 0) {
    for (int i = 0; i < a.batch; ++i) {
      serve::RequestSpec spec = req.spec;
      spec.seed += static_cast<std::uint64_t>(i);
      all.push_back(std::make_shared<serve::Request>(spec));
      if (engine.scheduler()->submit(all.back()) != serve::Admission::accepted)
        throw Error(ErrorCode::InvalidArgument,
                    "--batch " + std::to_string(a.batch) + ": more than --max-batch + --max-queue");
    }
    engine.scheduler()->drain();  // shut down once they are done
  }
  engine.run();
  if (world.rank() != 0) return 0;
  // Timing: the first token comes after the prefill; the rest are decode steps.
  const auto secs = [](auto d) { return std::chrono::duration<double>(d).count(); };
  double ttft = 0, decode = 0, end = 0;
  std::size_t decoded = 0;
  for (const auto& x : all) {
    std::lock_guard<std::mutex> l(x->mu);
    ttft = std::max(ttft, secs(x->first_token_at - start));
    end = std::max(end, secs(x->done_at - start));
    decode = std::max(decode, secs(x->done_at - x->first_token_at));
    decoded += x->tokens.size() - 1;
  }
  std::fprintf(stderr,
               "epx-generate: batch %d on %d ranks (%s decode, %s dispatch%s): first tokens after "
               "%.1f ms, then "
               "%.1f tokens/s per request, %.1f in all (%zu decode tokens in %.3f s)\n",
               a.batch, world.size(),
               m.engine.auto_decode          ? "auto"
               : m.engine.low_latency_decode ? "low-latency"
                                             : "normal",
               m.engine.fp8_dispatch ? "fp8" : "f32",
               m.engine.deterministic ? ", deterministic" : "", 1e3 * ttft,
               decode > 0 ? static_cast<double>(decoded) / a.batch / decode : 0.0,
               decode > 0 ? static_cast<double>(decoded) / decode : 0.0, decoded, end - ttft);
  const std::shared_ptr<serve::Request>& r = all.front();
  std::lock_guard<std::mutex> l(r->mu);
  if (a.json) {
    const serve::CompletionInfo info{"cmpl-0", 0, m.name};
    std::cout << serve::completion_json(info, r->text, r->tokens, r->finish_reason,
                                        static_cast<std::int64_t>(req.spec.prompt.size()))
              << std::endl;
  } else {
    std::cout << r->text << std::endl;
  }
  std::fprintf(stderr, "epx-generate: %zu prompt tokens, %zu generated, finish_reason %s\n",
               req.spec.prompt.size(), r->tokens.size(), r->finish_reason.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return launch::program_main("epx-generate", argc, argv, parse, generate);
}
