#include "serve/api.hpp"

#include <cmath>
#include <cstdio>
#include <random>

#include <nlohmann/json.hpp>

namespace epx::serve {

using nlohmann::json;

namespace {

bool fail(ApiError& e, std::string message, std::string param) {
  e.status = 400;
  e.message = std::move(message);
  e.param = std::move(param);
  return false;
}

bool is_integer(const json& v) {
  return v.is_number_integer();
}  // bools are not numbers

std::string type_name(const json& v) {
  return v.type_name();
}

std::string fmt(double x) {
  char b[32];
  std::snprintf(b, sizeof b, "%g", x);
  return b;
}

bool number_in(const json& body, const char* key, double lo, double hi, bool lo_open, double& out,
               ApiError& e) {
  if (!body.contains(key) || body[key].is_null()) return true;
  const json& v = body[key];
  if (!v.is_number())
    return fail(e, std::string(key) + " must be a number, got " + type_name(v), key);
  const double x = v.get<double>();
  if (!std::isfinite(x) || x > hi || (lo_open ? x <= lo : x < lo)) {
    return fail(e,
                std::string(key) + " = " + fmt(x) + ", expected " + (lo_open ? "> " : ">= ") +
                    fmt(lo) + " and <= " + fmt(hi),
                key);
  }
  out = x;
  return true;
}

}  // namespace

bool parse_completion_request(const std::string& body_text, const ApiLimits& limits,
                              CompletionRequest& out, ApiError& e) {
  out = CompletionRequest{};
  json body;
  try {
    body = json::parse(body_text);
  } catch (const std::exception& x) {
    return fail(e, std::string("the request body is not valid JSON: ") + x.what(), "");
  }
  if (!body.is_object())
    return fail(e, "the request body must be a JSON object, got " + type_name(body), "");
  const bool bytes = limits.vocab_size == 256;
  RequestSpec& s = out.spec;

  if (!body.contains("prompt") || body["prompt"].is_null())
    return fail(e, "prompt is required", "prompt");
  const json& p = body["prompt"];
  if (p.is_string()) {
    if (!bytes)
      return fail(e,
                  "a text prompt needs a byte vocabulary (this model has " +
                      std::to_string(limits.vocab_size) + " tokens); send a list of token ids",
                  "prompt");
    for (const char c : p.get<std::string>()) s.prompt.push_back(static_cast<unsigned char>(c));
  } else if (p.is_array()) {
    for (std::size_t i = 0; i < p.size(); ++i) {
      const json& t = p[i];
      if (!is_integer(t)) {
        if (t.is_string() || t.is_array())
          return fail(e, "a list of prompts is not supported: send one prompt per request",
                      "prompt");
        return fail(e,
                    "prompt[" + std::to_string(i) + "] must be a token id (an integer), got " +
                        type_name(t),
                    "prompt");
      }
      const bool neg =
          t.is_number_integer() && !t.is_number_unsigned() && t.get<std::int64_t>() < 0;
      if (neg || t.get<std::uint64_t>() >= static_cast<std::uint64_t>(limits.vocab_size))
        return fail(e,
                    "prompt[" + std::to_string(i) + "] = " + t.dump() +
                        " is not a token id of this model (0 <= id < " +
                        std::to_string(limits.vocab_size) + ")",
                    "prompt");
      s.prompt.push_back(static_cast<std::int32_t>(t.get<std::int64_t>()));
    }
  } else {
    return fail(e, "prompt must be a string or a list of token ids, got " + type_name(p), "prompt");
  }
  if (s.prompt.empty()) return fail(e, "prompt is empty", "prompt");

  if (body.contains("max_tokens") && !body["max_tokens"].is_null()) {
    const json& m = body["max_tokens"];
    if (!is_integer(m))
      return fail(e, "max_tokens must be an integer, got " + type_name(m), "max_tokens");
    if (m.is_number_unsigned() ? m.get<std::uint64_t>() < 1 : m.get<std::int64_t>() < 1)
      return fail(e, "max_tokens = " + m.dump() + ", expected >= 1", "max_tokens");
    if (m.get<std::uint64_t>() > static_cast<std::uint64_t>(limits.max_context))
      return fail(e,
                  "max_tokens = " + m.dump() + " is more than the context length of " +
                      std::to_string(limits.max_context),
                  "max_tokens");
    s.max_tokens = static_cast<int>(m.get<std::int64_t>());
  }
  const std::int64_t total = static_cast<std::int64_t>(s.prompt.size()) + s.max_tokens;
  if (total > limits.max_context)
    return fail(e,
                "this model's context length is " + std::to_string(limits.max_context) +
                    " tokens, but the prompt has " + std::to_string(s.prompt.size()) +
                    " tokens and max_tokens is " + std::to_string(s.max_tokens) + " (" +
                    std::to_string(total) + " in all); shorten the prompt or lower max_tokens",
                "max_tokens");

  if (!number_in(body, "temperature", 0, 2, false, s.sampling.temperature, e)) return false;
  if (!number_in(body, "top_p", 0, 1, true, s.sampling.top_p, e)) return false;

  if (body.contains("n") && !body["n"].is_null() && body["n"] != 1)
    return fail(e, "n = " + body["n"].dump() + ": only n = 1 is supported", "n");

  out.seeded = body.contains("seed") && !body["seed"].is_null();
  if (out.seeded) {
    const json& sd = body["seed"];
    if (!is_integer(sd)) return fail(e, "seed must be an integer, got " + type_name(sd), "seed");
    s.seed = sd.is_number_unsigned() ? sd.get<std::uint64_t>()
                                     : static_cast<std::uint64_t>(sd.get<std::int64_t>());
  } else {
    std::random_device rd;
    s.seed = (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
  }

  if (body.contains("stop") && !body["stop"].is_null()) {
    const json& st = body["stop"];
    std::vector<json> items;
    if (st.is_string()) {
      items.push_back(st);
    } else if (st.is_array()) {
      items.assign(st.begin(), st.end());
    } else {
      return fail(e, "stop must be a string or a list of strings, got " + type_name(st), "stop");
    }
    if (items.size() > 4)
      return fail(e, "stop has " + std::to_string(items.size()) + " strings, at most 4", "stop");
    for (const json& x : items) {
      if (!x.is_string()) return fail(e, "stop must hold strings, got " + type_name(x), "stop");
      if (x.get<std::string>().empty()) return fail(e, "stop strings must not be empty", "stop");
      s.stop.push_back(x.get<std::string>());
    }
    if (!s.stop.empty() && !bytes)
      return fail(e,
                  "stop strings need a byte vocabulary (this model has " +
                      std::to_string(limits.vocab_size) + " tokens)",
                  "stop");
  }

  if (body.contains("stream") && !body["stream"].is_null()) {
    if (!body["stream"].is_boolean())
      return fail(e, "stream must be true or false, got " + type_name(body["stream"]), "stream");
    out.stream = body["stream"].get<bool>();
  }
  return true;
}

std::string error_json(const ApiError& e) {
  json j;
  j["error"] = {{"message", e.message},
                {"type", e.type},
                {"param", e.param.empty() ? json(nullptr) : json(e.param)},
                {"code", nullptr}};
  return j.dump();
}

namespace {

json choice(const std::string& text, const std::vector<std::int32_t>& tokens,
            const std::string& reason) {
  return {{"index", 0},
          {"text", text},
          {"token_ids", tokens},
          {"logprobs", nullptr},
          {"finish_reason", reason.empty() ? json(nullptr) : json(reason)}};
}

json usage(std::int64_t prompt, std::int64_t completion) {
  return {{"prompt_tokens", prompt},
          {"completion_tokens", completion},
          {"total_tokens", prompt + completion}};
}

json head(const CompletionInfo& info) {
  return {{"id", info.id},
          {"object", "text_completion"},
          {"created", info.created},
          {"model", info.model}};
}

// The text is valid UTF-8 by construction (serve/text.hpp); should that
// ever not hold, replace rather than throw in the middle of a response.
std::string dump(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

}  // namespace

std::string completion_json(const CompletionInfo& info, const std::string& text,
                            const std::vector<std::int32_t>& tokens,
                            const std::string& finish_reason, std::int64_t prompt_tokens) {
  json j = head(info);
  j["choices"] = json::array({choice(text, tokens, finish_reason)});
  j["usage"] = usage(prompt_tokens, static_cast<std::int64_t>(tokens.size()));
  return dump(j);
}

std::string chunk_json(const CompletionInfo& info, const std::string& text,
                       const std::vector<std::int32_t>& tokens, const std::string& finish_reason,
                       std::int64_t prompt_tokens, std::int64_t completion_tokens) {
  json j = head(info);
  j["choices"] = json::array({choice(text, tokens, finish_reason)});
  if (!finish_reason.empty()) j["usage"] = usage(prompt_tokens, completion_tokens);
  return dump(j);
}

}  // namespace epx::serve
