// epx-train's config: parsing, overrides, errors that name the key, and the
// YAML round trip that state.json relies on.
#include <gtest/gtest.h>

#include <epx/error.hpp>

#include "train/config.hpp"

namespace epx::train {
namespace {

std::string error_of(const std::string& yaml, const std::vector<std::string>& sets = {}) {
  try {
    parse_config(yaml, sets);
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::InvalidArgument);
    return e.what();
  }
  return "";
}

TEST(TrainConfig, ParsesSectionsAndOverrides) {
  const Config c = parse_config(
      "model:\n  hidden_size: 96\n  score_function: softmax\ntrain:\n  lr: 1.0e-3\n  seed: 99\n"
      "parallel:\n  fp8_dispatch: true\n",
      {"train.lr=2e-3", "model.num_layers=5", "data.path=/tmp/x"});
  EXPECT_EQ(c.model.hidden_size, 96);
  EXPECT_EQ(c.model.score_function, "softmax");
  EXPECT_EQ(c.model.num_layers, 5);
  EXPECT_DOUBLE_EQ(c.train.lr, 2e-3);
  EXPECT_EQ(c.train.seed, 99u);
  EXPECT_TRUE(c.parallel.fp8_dispatch);
  EXPECT_EQ(c.data.path, "/tmp/x");
  EXPECT_EQ(c.train.seq_len, TrainConfig{}.seq_len);  // untouched keys keep their defaults
}

TEST(TrainConfig, ErrorsNameTheKeyAndValue) {
  EXPECT_NE(error_of("modle:\n  x: 1\n").find("unknown section 'modle'"), std::string::npos);
  EXPECT_NE(error_of("model:\n  hiden_size: 1\n").find("did you mean model.hidden_size"), std::string::npos);
  EXPECT_NE(error_of("model:\n  top_k: [1, 2]\n").find("model.top_k = a list, expected an integer"), std::string::npos);
  EXPECT_NE(error_of("model:\n  top_k: 2.5\n").find("model.top_k = '2.5', expected an integer"), std::string::npos);
  EXPECT_NE(error_of("train:\n  beta1: 1.0\n").find("train.beta1 = 1.0"), std::string::npos);
  EXPECT_NE(error_of("model:\n  score_function: relu\n").find("sigmoid | softmax"), std::string::npos);
  EXPECT_NE(error_of("", {"train.lr"}).find("expected section.key=value"), std::string::npos);
  EXPECT_NE(error_of("", {"train.nope=1"}).find("unknown key train.nope"), std::string::npos);
  EXPECT_NE(error_of("train:\n  seed: -1\n").find("train.seed"), std::string::npos);
}

TEST(TrainConfig, CrossKeyChecks) {
  Config c;
  c.data.path = "/nonexistent";
  c.model.num_experts = 8;
  c.model.n_group = 4;
  c.model.topk_group = 1;
  c.model.top_k = 3;
  try {
    validate(c, 1);
    ADD_FAILURE() << "accepted top_k 3 with 2 experts in the kept group";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("model.top_k = 3, expected <= 2"), std::string::npos) << e.what();
  }
}

TEST(TrainConfig, YamlRoundTrip) {
  Config c = parse_config("model:\n  routed_scaling_factor: 2.5\n  init_from: \"a b.safetensors\"\n"
                          "train:\n  lr: 0.00123456789012345\n  seed: 18446744073709551615\n");
  const Config back = parse_config(to_yaml(c));
  EXPECT_EQ(to_yaml(back), to_yaml(c));
  EXPECT_DOUBLE_EQ(back.model.routed_scaling_factor, 2.5);
  EXPECT_EQ(back.model.init_from, "a b.safetensors");
  EXPECT_EQ(back.train.lr, c.train.lr);  // 17 digits: the same double
  EXPECT_EQ(back.train.seed, 18446744073709551615ull);
}

}  // namespace
}  // namespace epx::train
