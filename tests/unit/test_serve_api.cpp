// serve/api.hpp: the OpenAI request rules (the HTTP test sends the bad
// inputs through the real server; here the parsed values themselves).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "serve/api.hpp"

using namespace epx::serve;

namespace {

bool parse(const std::string& body, CompletionRequest& r, ApiError& e, int V = 256, int ctx = 64) {
  return parse_completion_request(body, {V, ctx}, r, e);
}

}  // namespace

TEST(ServeApi, DefaultsAndValues) {
  CompletionRequest r;
  ApiError e;
  ASSERT_TRUE(parse(R"({"prompt": "ab"})", r, e));
  EXPECT_EQ(r.spec.prompt, (std::vector<std::int32_t>{'a', 'b'}));
  EXPECT_EQ(r.spec.max_tokens, 16);
  EXPECT_EQ(r.spec.sampling.temperature, 1.0);
  EXPECT_EQ(r.spec.sampling.top_p, 1.0);
  EXPECT_FALSE(r.stream);
  EXPECT_FALSE(r.seeded);
  CompletionRequest s;
  ASSERT_TRUE(parse(R"({"prompt": [0, 255], "max_tokens": 62, "temperature": 0, "top_p": 0.5,
                        "seed": 18446744073709551615, "stop": "x", "stream": true, "extra": [1]})",
                    s, e));
  EXPECT_EQ(s.spec.prompt, (std::vector<std::int32_t>{0, 255}));
  EXPECT_EQ(s.spec.max_tokens, 62);
  EXPECT_EQ(s.spec.seed, 18446744073709551615ull);
  EXPECT_EQ(s.spec.stop, std::vector<std::string>{"x"});
  EXPECT_TRUE(s.stream && s.seeded);
}

TEST(ServeApi, TheContextBoundsPromptPlusMaxTokens) {
  CompletionRequest r;
  ApiError e;
  EXPECT_TRUE(parse(R"({"prompt": "abcd", "max_tokens": 60})", r, e));
  EXPECT_FALSE(parse(R"({"prompt": "abcd", "max_tokens": 61})", r, e));
  EXPECT_EQ(e.status, 400);
  EXPECT_EQ(e.param, "max_tokens");
  EXPECT_NE(e.message.find(
                "context length is 64 tokens, but the prompt has 4 tokens and max_tokens is 61"),
            std::string::npos)
      << e.message;
}

TEST(ServeApi, ANonByteVocabularyNeedsTokenIds) {
  CompletionRequest r;
  ApiError e;
  EXPECT_FALSE(parse(R"({"prompt": "ab"})", r, e, 1000));
  EXPECT_NE(e.message.find("send a list of token ids"), std::string::npos);
  EXPECT_TRUE(parse(R"({"prompt": [999]})", r, e, 1000));
  EXPECT_FALSE(parse(R"({"prompt": [1000]})", r, e, 1000));
  EXPECT_FALSE(parse(R"({"prompt": [1], "stop": "x"})", r, e, 1000));
}

TEST(ServeApi, ErrorsAreOpenAiShaped) {
  ApiError e;
  e.message = "m";
  e.param = "prompt";
  const auto j = nlohmann::json::parse(error_json(e));
  EXPECT_EQ(j["error"]["message"], "m");
  EXPECT_EQ(j["error"]["type"], "invalid_request_error");
  EXPECT_EQ(j["error"]["param"], "prompt");
  e.param.clear();
  EXPECT_TRUE(nlohmann::json::parse(error_json(e))["error"]["param"].is_null());
}

TEST(ServeApi, ResponseAndChunks) {
  const CompletionInfo info{"cmpl-3", 7, "m"};
  const auto j = nlohmann::json::parse(completion_json(info, "hi", {104, 105}, "stop", 5));
  EXPECT_EQ(j["choices"][0]["text"], "hi");
  EXPECT_EQ(j["choices"][0]["token_ids"], nlohmann::json::array({104, 105}));
  EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(j["usage"]["total_tokens"], 7);
  const auto c = nlohmann::json::parse(chunk_json(info, "h", {104}, "", 5, 1));
  EXPECT_TRUE(c["choices"][0]["finish_reason"].is_null());
  EXPECT_FALSE(c.contains("usage"));
}
