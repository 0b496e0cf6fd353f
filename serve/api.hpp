// The OpenAI completions format of POST /v1/completions: parsing and
// checking a request body, and the response, stream chunk and error JSON.
// No HTTP here (serve/http_server.cpp), so every rule is easy to test.
//
// Request: prompt (a string, or a list of token ids), max_tokens (default
// 16), temperature (default 1; 0 = greedy), top_p (default 1), seed, stop (a
// string or up to 4), stream (default false); unknown fields are ignored.
// A string prompt and stop strings need a byte vocabulary (V = 256).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "serve/request.hpp"

namespace epx::serve {

struct ApiLimits {
  int vocab_size = 256;
  int max_context = 0;
};

struct ApiError {
  int status = 400;
  std::string message;
  std::string type = "invalid_request_error";
  std::string param;  // the offending field, or empty (JSON null)
};

struct CompletionRequest {
  RequestSpec spec;
  bool stream = false;
  bool seeded = false;  // seed given (else spec.seed is drawn at random)
};

// Returns false with `error` filled when the body is not a valid request.
bool parse_completion_request(const std::string& body, const ApiLimits& limits,
                              CompletionRequest& out, ApiError& error);

std::string error_json(const ApiError& e);

struct CompletionInfo {
  std::string id;  // "cmpl-N"
  std::int64_t created = 0;
  std::string model;
};

// The whole response: choices[0].{text, token_ids, finish_reason}, usage.
std::string completion_json(const CompletionInfo& info, const std::string& text,
                            const std::vector<std::int32_t>& tokens,
                            const std::string& finish_reason, std::int64_t prompt_tokens);
// One server-sent event's JSON: the new text and token ids; finish_reason
// empty (JSON null) until the last chunk, which also carries usage.
std::string chunk_json(const CompletionInfo& info, const std::string& text,
                       const std::vector<std::int32_t>& tokens, const std::string& finish_reason,
                       std::int64_t prompt_tokens, std::int64_t completion_tokens);

}  // namespace epx::serve
