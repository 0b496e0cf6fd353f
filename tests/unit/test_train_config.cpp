// epx-train's config: defaults, a full file, every bad config of the issue's
// list, --set overrides and the to_yaml round trip.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <functional>
#include <limits>

#include <epx/error.hpp>

#include "train/config.hpp"

namespace epx::train {
namespace {

// Runs `fn`; expects one InvalidArgument starting "config: " that holds every `part`.
void expect_config_error(const std::function<void()>& fn, const std::vector<std::string>& parts) {
  try {
    fn();
    ADD_FAILURE() << "no error; expected one containing '" << parts.front() << "'";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_EQ(e.code(), ErrorCode::InvalidArgument) << what;
    EXPECT_EQ(what.rfind("config: ", 0), 0u) << what;
    for (const auto& p : parts)
      EXPECT_NE(what.find(p), std::string::npos) << "'" << p << "' not in: " << what;
  }
}

void expect_parse_error(const std::string& yaml, const std::vector<std::string>& parts) {
  SCOPED_TRACE(yaml);
  expect_config_error([&] { parse_config(yaml); }, parts);
}

// A token file of `bytes` bytes, removed with the fixture.
class TrainConfigTest : public ::testing::Test {
 protected:
  std::string data_file(std::size_t bytes) {
    std::string p = ::testing::TempDir() + "epx_cfg_XXXXXX";
    const int fd = ::mkstemp(p.data());
    EXPECT_GE(fd, 0);
    ::close(fd);
    std::ofstream(p, std::ios::binary) << std::string(bytes, 'a');
    made_.push_back(p);
    return p;
  }
  void TearDown() override {
    for (const auto& p : made_) std::remove(p.c_str());
  }
  // The defaults with a data file large enough for them.
  Config good() {
    Config c;
    c.data.path = data_file(10000);
    return c;
  }
  std::vector<std::string> made_;
};

TEST_F(TrainConfigTest, EmptyTextGivesTheDefaults) {
  const Config d;
  for (const std::string text : {"", "\n", "# nothing\n", "model:\nlog:\n"}) {
    SCOPED_TRACE(text);
    const Config c = parse_config(text);
    EXPECT_EQ(to_yaml(c), to_yaml(d));
  }
  EXPECT_EQ(d.model.vocab_size, 256);
  EXPECT_EQ(d.model.score_function, "sigmoid");
  EXPECT_EQ(d.train.seed, 1234u);
  EXPECT_EQ(d.data.format, "bytes");
  EXPECT_EQ(d.parallel.dp, 1);
  EXPECT_FALSE(d.parallel.fp8_dispatch);
  EXPECT_EQ(d.log.every, 1);
  EXPECT_NO_THROW(validate(good(), 1));
}

const char* kFull = R"(
# every key, none at its default
model:
  vocab_size: 1000
  hidden_size: 96
  num_layers: 5
  num_heads: 6
  intermediate_size: 200
  first_k_dense: 2
  num_experts: 16
  num_shared_experts: 2
  moe_intermediate_size: 48
  top_k: 6
  n_group: 4
  topk_group: 2
  score_function: softmax
  routed_scaling_factor: 2.5
  bias_update_rate: 0.01
  rms_norm_eps: 1e-5
  rope_theta: 50000
  init_std: 0.006
  init_from: weights/start.safetensors
train:
  seq_len: 32
  micro_batch_size: 2
  num_micro_batches: 3
  max_steps: 500
  lr: 1.0e-3
  min_lr: 0.0001
  warmup_steps: 0
  weight_decay: 0.05
  beta1: 0.8
  beta2: 0.999
  eps: 1.0e-6
  grad_clip: 0
  seed: 18446744073709551615
  eval_every: 50
  eval_batches: 2
  checkpoint_every: 100
  checkpoint_dir: /tmp/ckpt dir
  threads: 2
data:
  path: tokens.u16
  format: u16
  val_fraction: 0.25
parallel:
  dp: 4
  ep: 2
  fp8_dispatch: true
log:
  metrics: run/metrics.jsonl
  every: 10
  report: run/report.svg
)";

void expect_full(const Config& c) {
  const ModelConfig& m = c.model;
  EXPECT_EQ(m.vocab_size, 1000);
  EXPECT_EQ(m.hidden_size, 96);
  EXPECT_EQ(m.num_layers, 5);
  EXPECT_EQ(m.num_heads, 6);
  EXPECT_EQ(m.head_dim(), 16);
  EXPECT_EQ(m.intermediate_size, 200);
  EXPECT_EQ(m.first_k_dense, 2);
  EXPECT_EQ(m.num_experts, 16);
  EXPECT_EQ(m.num_shared_experts, 2);
  EXPECT_EQ(m.moe_intermediate_size, 48);
  EXPECT_EQ(m.top_k, 6);
  EXPECT_EQ(m.n_group, 4);
  EXPECT_EQ(m.topk_group, 2);
  EXPECT_EQ(m.score_function, "softmax");
  EXPECT_EQ(m.routed_scaling_factor, 2.5);
  EXPECT_EQ(m.bias_update_rate, 0.01);
  EXPECT_EQ(m.rms_norm_eps, 1e-5);
  EXPECT_EQ(m.rope_theta, 50000.0);
  EXPECT_EQ(m.init_std, 0.006);
  EXPECT_EQ(m.init_from, "weights/start.safetensors");
  const auto& t = c.train;
  EXPECT_EQ(t.seq_len, 32);
  EXPECT_EQ(t.micro_batch_size, 2);
  EXPECT_EQ(t.num_micro_batches, 3);
  EXPECT_EQ(t.max_steps, 500);
  EXPECT_EQ(t.lr, 1e-3);
  EXPECT_EQ(t.min_lr, 1e-4);
  EXPECT_EQ(t.warmup_steps, 0);
  EXPECT_EQ(t.weight_decay, 0.05);
  EXPECT_EQ(t.beta1, 0.8);
  EXPECT_EQ(t.beta2, 0.999);
  EXPECT_EQ(t.eps, 1e-6);
  EXPECT_EQ(t.grad_clip, 0.0);
  EXPECT_EQ(t.seed, std::numeric_limits<std::uint64_t>::max());
  EXPECT_EQ(t.eval_every, 50);
  EXPECT_EQ(t.eval_batches, 2);
  EXPECT_EQ(t.checkpoint_every, 100);
  EXPECT_EQ(t.checkpoint_dir, "/tmp/ckpt dir");
  EXPECT_EQ(t.threads, 2);
  EXPECT_EQ(c.data.path, "tokens.u16");
  EXPECT_EQ(c.data.format, "u16");
  EXPECT_EQ(c.data.val_fraction, 0.25);
  EXPECT_EQ(c.parallel.dp, 4);
  EXPECT_EQ(c.parallel.ep, 2);
  EXPECT_TRUE(c.parallel.fp8_dispatch);
  EXPECT_EQ(c.log.metrics, "run/metrics.jsonl");
  EXPECT_EQ(c.log.every, 10);
  EXPECT_EQ(c.log.report, "run/report.svg");
}

TEST_F(TrainConfigTest, FullFileSetsEveryKey) {
  const Config c = parse_config(kFull);
  expect_full(c);
  // And it is a valid config on 4 ranks, given its data file (u16: even size).
  Config v = c;
  v.data.path = data_file(20000);
  EXPECT_NO_THROW(validate(v, 4));
}

TEST_F(TrainConfigTest, LoadConfigReadsAFile) {
  const std::string p = data_file(0);
  std::ofstream(p) << kFull;
  expect_full(load_config(p));
  expect_config_error([&] { load_config(p + ".absent"); }, {"cannot read", p + ".absent"});
  std::ofstream(p) << "model:\n  top_k: [1\n";
  expect_config_error([&] { load_config(p); }, {p, "YAML syntax error"});
}

TEST_F(TrainConfigTest, ToYamlRoundTripsEveryKey) {
  Config c = parse_config(kFull);
  // Values a careless emitter would garble: strings that look like numbers,
  // booleans or YAML syntax, the empty string, doubles that need 17 digits.
  c.model.init_from = "";
  c.data.path = "123";
  c.log.metrics = "true";
  c.log.report = "a: b # not a comment, 'quoted' \"too\"";
  c.train.checkpoint_dir = "- [x]";
  c.train.lr = 0.1 + 0.2;
  c.model.init_std = 1.0 / 3.0;
  c.model.rope_theta = 1e300;
  c.model.rms_norm_eps = 5e-324;
  const std::string y = to_yaml(c);
  const Config back = parse_config(y);
  EXPECT_EQ(to_yaml(back), y);
  EXPECT_EQ(back.model.init_from, "");
  EXPECT_EQ(back.data.path, "123");
  EXPECT_EQ(back.log.metrics, "true");
  EXPECT_EQ(back.log.report, c.log.report);
  EXPECT_EQ(back.train.checkpoint_dir, "- [x]");
  EXPECT_EQ(back.train.lr, 0.1 + 0.2);
  EXPECT_EQ(back.model.init_std, 1.0 / 3.0);
  EXPECT_EQ(back.model.rope_theta, 1e300);
  EXPECT_EQ(back.model.rms_norm_eps, 5e-324);
  EXPECT_EQ(back.train.seed, c.train.seed);
  EXPECT_TRUE(back.parallel.fp8_dispatch);

  // Every key of every section is written.
  for (const char* key : {"vocab_size",
                          "hidden_size",
                          "num_layers",
                          "num_heads",
                          "intermediate_size",
                          "first_k_dense",
                          "num_experts",
                          "num_shared_experts",
                          "moe_intermediate_size",
                          "top_k",
                          "n_group",
                          "topk_group",
                          "score_function",
                          "routed_scaling_factor",
                          "bias_update_rate",
                          "rms_norm_eps",
                          "rope_theta",
                          "init_std",
                          "init_from",
                          "seq_len",
                          "micro_batch_size",
                          "num_micro_batches",
                          "max_steps",
                          "lr",
                          "min_lr",
                          "warmup_steps",
                          "weight_decay",
                          "beta1",
                          "beta2",
                          "eps",
                          "grad_clip",
                          "seed",
                          "eval_every",
                          "eval_batches",
                          "checkpoint_every",
                          "checkpoint_dir",
                          "threads",
                          "path",
                          "format",
                          "val_fraction",
                          "dp",
                          "ep",
                          "fp8_dispatch",
                          "layers_per_stage",
                          "metrics",
                          "every",
                          "report"})
    EXPECT_NE(y.find(std::string(key) + ":"), std::string::npos) << key << " missing from\n" << y;
  for (const char* sec : {"model:", "train:", "data:", "parallel:", "log:"})
    EXPECT_EQ(y.find(std::string("\n") + sec) != std::string::npos || y.rfind(sec, 0) == 0, true)
        << sec;
  // Readable doubles: the shortest text that round-trips.
  EXPECT_NE(to_yaml(Config{}).find("lr: 0.003"), std::string::npos) << to_yaml(Config{});
}

TEST_F(TrainConfigTest, IntegerListsParseRoundTripAndNameTheBadEntry) {
  const Config c = parse_config("parallel:\n  layers_per_stage: [1, 3, 2]\n");
  EXPECT_EQ(c.parallel.layers_per_stage, (std::vector<int>{1, 3, 2}));
  EXPECT_EQ(parse_config(to_yaml(c)).parallel.layers_per_stage, c.parallel.layers_per_stage);
  EXPECT_TRUE(
      parse_config("parallel:\n  layers_per_stage: []\n").parallel.layers_per_stage.empty());
  EXPECT_TRUE(parse_config("parallel:\n  layers_per_stage:\n").parallel.layers_per_stage.empty());
  EXPECT_EQ(parse_config("", {"parallel.layers_per_stage=[2,2]"}).parallel.layers_per_stage,
            (std::vector<int>{2, 2}));
  expect_parse_error("parallel:\n  layers_per_stage: 3\n",
                     {"parallel.layers_per_stage = 3", "expected a list of integers"});
  expect_parse_error("parallel:\n  layers_per_stage: [1, two]\n",
                     {"parallel.layers_per_stage[1] = two", "expected an integer"});
  expect_parse_error("parallel:\n  layers_per_stage: [1, \"2\"]\n",
                     {"parallel.layers_per_stage[1] = \"2\"", "expected an integer"});
  expect_parse_error("parallel:\n  layers_per_stage: [2, 0]\n",
                     {"parallel.layers_per_stage[1] = 0", "expected >= 1"});
}

TEST_F(TrainConfigTest, UnknownSectionsAndKeysAreNamed) {
  expect_parse_error("modle:\n  top_k: 2\n", {"unknown section modle", "did you mean model?"});
  expect_parse_error("optimizer:\n  lr: 1\n", {"unknown section optimizer", "model, train, data"});
  expect_parse_error("model:\n  topk: 2\n",
                     {"unknown key model.topk", "did you mean model.top_k?"});
  expect_parse_error("model:\n  hiden_size: 2\n", {"model.hiden_size", "model.hidden_size"});
  expect_parse_error("model:\n  seq_len: 64\n", {"unknown key model.seq_len", "belongs to train:"});
  expect_parse_error("train:\n  frobnicate: 1\n", {"unknown key train.frobnicate"});
  expect_parse_error("model:\n  top_k: 2\n  top_k: 3\n", {"model.top_k appears twice"});
  expect_parse_error("model:\n  top_k: 2\nmodel:\n  top_k: 3\n", {"section model appears twice"});
}

TEST_F(TrainConfigTest, WrongTypesNameKeyValueAndType) {
  expect_parse_error("model:\n  num_layers: two\n",
                     {"model.num_layers = two", "expected an integer"});
  expect_parse_error("model:\n  num_layers: \"2\"\n",
                     {"model.num_layers = \"2\"", "expected an integer"});
  expect_parse_error("model:\n  num_layers: 2.5\n",
                     {"model.num_layers = 2.5", "expected an integer"});
  expect_parse_error("model:\n  num_layers: 2.0\n",
                     {"model.num_layers = 2.0", "expected an integer"});
  expect_parse_error("model:\n  num_layers: 1e3\n",
                     {"model.num_layers = 1e3", "expected an integer"});
  expect_parse_error("model:\n  num_layers: [2, 3]\n",
                     {"model.num_layers = [2, 3] (a list)", "expected an integer"});
  expect_parse_error("model:\n  num_layers: {a: 1}\n",
                     {"model.num_layers", "(a map)", "expected an integer"});
  expect_parse_error("model:\n  num_layers:\n", {"model.num_layers = null", "expected an integer"});
  expect_parse_error("model:\n  num_layers: true\n",
                     {"model.num_layers = true", "expected an integer"});
  expect_parse_error("model:\n  num_layers: 99999999999\n",
                     {"model.num_layers = 99999999999", "32-bit"});
  expect_parse_error("train:\n  lr: fast\n", {"train.lr = fast", "expected a number"});
  expect_parse_error("train:\n  lr: .inf\n", {"train.lr = .inf", "expected a number"});
  expect_parse_error("train:\n  lr: nan\n", {"train.lr = nan", "expected a number"});
  expect_parse_error("train:\n  lr: [0.1]\n", {"train.lr = [0.1] (a list)", "expected a number"});
  expect_parse_error("train:\n  seed: -1\n", {"train.seed = -1", "non-negative integer"});
  expect_parse_error("train:\n  seed: 18446744073709551616\n",
                     {"train.seed = 18446744073709551616", "<= 18446744073709551615"});
  expect_parse_error("parallel:\n  fp8_dispatch: maybe\n",
                     {"parallel.fp8_dispatch = maybe", "true or false"});
  expect_parse_error("parallel:\n  fp8_dispatch: 1\n",
                     {"parallel.fp8_dispatch = 1", "true or false"});
  expect_parse_error("data:\n  path: [a, b]\n",
                     {"data.path = [a, b] (a list)", "expected a string"});
  expect_parse_error("model: 3\n", {"model = 3", "expected a map"});
  expect_parse_error("- model\n", {"top level", "expected a map of sections"});
  expect_parse_error("model:\n  top_k: [1\n", {"<text>:3:", "YAML syntax error"});
  expect_parse_error("model: {}\n---\ntrain: {}\n", {"2 YAML documents"});
}

TEST_F(TrainConfigTest, PerKeyRangesNameKeyValueAndRange) {
  const std::vector<std::pair<std::string, std::vector<std::string>>> cases = {
      {"model:\n  vocab_size: 0", {"model.vocab_size = 0", "expected >= 1"}},
      {"model:\n  hidden_size: -4", {"model.hidden_size = -4", ">= 1"}},
      {"model:\n  num_layers: 0", {"model.num_layers = 0", ">= 1"}},
      {"model:\n  num_heads: 0", {"model.num_heads = 0"}},
      {"model:\n  intermediate_size: 0", {"model.intermediate_size = 0"}},
      {"model:\n  first_k_dense: -1", {"model.first_k_dense = -1", ">= 0"}},
      {"model:\n  num_experts: 0", {"model.num_experts = 0"}},
      {"model:\n  num_shared_experts: -1", {"model.num_shared_experts = -1"}},
      {"model:\n  moe_intermediate_size: 0", {"model.moe_intermediate_size = 0"}},
      {"model:\n  top_k: 0", {"model.top_k = 0", ">= 1"}},
      {"model:\n  n_group: 0", {"model.n_group = 0"}},
      {"model:\n  topk_group: 0", {"model.topk_group = 0"}},
      {"model:\n  score_function: relu", {"model.score_function = relu", "sigmoid, softmax"}},
      {"model:\n  routed_scaling_factor: 0", {"model.routed_scaling_factor = 0", "> 0"}},
      {"model:\n  bias_update_rate: -0.1", {"model.bias_update_rate = -0.1", ">= 0"}},
      {"model:\n  rms_norm_eps: 0", {"model.rms_norm_eps = 0", "> 0"}},
      {"model:\n  rope_theta: -1", {"model.rope_theta = -1", "> 0"}},
      {"model:\n  init_std: 0", {"model.init_std = 0", "> 0"}},
      {"train:\n  seq_len: 0", {"train.seq_len = 0"}},
      {"train:\n  micro_batch_size: 0", {"train.micro_batch_size = 0"}},
      {"train:\n  num_micro_batches: 0", {"train.num_micro_batches = 0"}},
      {"train:\n  max_steps: 0", {"train.max_steps = 0"}},
      {"train:\n  lr: -1e-3", {"train.lr = -1e-3", ">= 0"}},
      {"train:\n  min_lr: -1", {"train.min_lr = -1"}},
      {"train:\n  warmup_steps: -1", {"train.warmup_steps = -1"}},
      {"train:\n  weight_decay: -0.1", {"train.weight_decay = -0.1"}},
      {"train:\n  beta1: 1", {"train.beta1 = 1", "in [0, 1)"}},
      {"train:\n  beta2: -0.5", {"train.beta2 = -0.5", "in [0, 1)"}},
      {"train:\n  eps: 0", {"train.eps = 0", "> 0"}},
      {"train:\n  grad_clip: -1", {"train.grad_clip = -1"}},
      {"train:\n  eval_every: -1", {"train.eval_every = -1"}},
      {"train:\n  eval_batches: -1", {"train.eval_batches = -1"}},
      {"train:\n  checkpoint_every: -5", {"train.checkpoint_every = -5"}},
      {"train:\n  threads: 0", {"train.threads = 0", ">= 1"}},
      {"data:\n  format: u8", {"data.format = u8", "bytes, u16, u32"}},
      {"data:\n  val_fraction: 1", {"data.val_fraction = 1", "in [0, 1)"}},
      {"data:\n  val_fraction: -0.1", {"data.val_fraction = -0.1"}},
      {"parallel:\n  dp: 0", {"parallel.dp = 0"}},
      {"parallel:\n  ep: 0", {"parallel.ep = 0"}},
      {"log:\n  every: 0", {"log.every = 0", ">= 1"}},
  };
  for (const auto& [yaml, parts] : cases) expect_parse_error(yaml + "\n", parts);
}

TEST_F(TrainConfigTest, OverridesApplyOnTopWithTheSameChecks) {
  const Config c =
      parse_config(kFull, {"model.top_k=4", "train.lr=2e-3", "data.path=other.bin",
                           "parallel.fp8_dispatch=false",
                           "model.init_from=", "log.metrics=a=b.jsonl", "train.seed=7"});
  EXPECT_EQ(c.model.top_k, 4);
  EXPECT_EQ(c.train.lr, 2e-3);
  EXPECT_EQ(c.data.path, "other.bin");
  EXPECT_FALSE(c.parallel.fp8_dispatch);
  EXPECT_EQ(c.model.init_from, "");
  EXPECT_EQ(c.log.metrics, "a=b.jsonl");  // only the first '=' splits
  EXPECT_EQ(c.train.seed, 7u);
  EXPECT_EQ(c.model.num_experts, 16);  // the rest from the file
  // Later overrides win.
  EXPECT_EQ(parse_config("", {"model.top_k=3", "model.top_k=5"}).model.top_k, 5);
  // The overrides reach to_yaml (state.json keeps them).
  EXPECT_NE(to_yaml(c).find("top_k: 4"), std::string::npos);

  auto bad = [](const std::string& o, const std::vector<std::string>& parts) {
    SCOPED_TRACE(o);
    expect_config_error([&] { parse_config("", {o}); }, parts);
  };
  bad("model.topk=2", {"unknown key model.topk", "--set model.topk=2", "model.top_k"});
  bad("modle.top_k=2", {"unknown section modle", "--set"});
  bad("model.top_k", {"--set model.top_k", "section.key=value"});
  bad("top_k=2", {"--set top_k=2", "section.key=value"});
  bad("model.top_k=two", {"model.top_k = two", "expected an integer"});
  bad("model.top_k=2.5", {"model.top_k = 2.5", "expected an integer"});
  bad("model.top_k=[1,2]", {"model.top_k", "(a list)"});
  bad("model.top_k=", {"model.top_k = null", "expected an integer"});
  bad("model.top_k=0", {"model.top_k = 0", ">= 1"});
  bad("train.beta2=1.0", {"train.beta2 = 1.0", "in [0, 1)"});
  bad("model.score_function=tanh", {"model.score_function = tanh"});
  bad("model.top_k=[1", {"--set model.top_k=[1", "not YAML"});
}

TEST_F(TrainConfigTest, ValidateRefusesEveryBadConfigOfTheIssue) {
  auto bad = [&](const std::function<void(Config&)>& edit, int world,
                 const std::vector<std::string>& parts) {
    Config c = good();
    edit(c);
    expect_config_error([&] { validate(c, world); }, parts);
  };
  // top_k above the experts of the kept groups (16 experts, 4 groups, keep 2).
  bad(
      [](Config& c) {
        c.model.num_experts = 16;
        c.model.n_group = 4;
        c.model.topk_group = 2;
        c.model.top_k = 9;
      },
      1, {"config: model.top_k = 9, expected <= 8 (topk_group 2 x 4 experts per group)"});
  bad([](Config& c) { c.model.top_k = 9; }, 1, {"model.top_k = 9", "<= model.num_experts = 8"});
  // Fewer than 2 experts per group.
  bad(
      [](Config& c) {
        c.model.n_group = 8;
        c.model.topk_group = 2;
      },
      1, {"model.n_group = 8", "1 expert per group", "expected >= 2"});
  bad([](Config& c) { c.model.n_group = 3; }, 1, {"model.n_group = 3", "model.num_experts = 8"});
  bad(
      [](Config& c) {
        c.model.n_group = 2;
        c.model.topk_group = 3;
      },
      1, {"model.topk_group = 3", "model.n_group = 2"});
  // hidden % heads, odd head_dim.
  bad([](Config& c) { c.model.num_heads = 5; }, 1,
      {"model.hidden_size = 64", "model.num_heads = 5"});
  bad(
      [](Config& c) {
        c.model.hidden_size = 60;
        c.model.num_heads = 4;
      },
      1, {"head_dim 15", "even", "model.hidden_size", "model.num_heads"});
  bad([](Config& c) { c.model.first_k_dense = 3; }, 1,
      {"model.first_k_dense = 3", "model.num_layers = 2"});
  // The grid.
  bad([](Config&) {}, 4, {"parallel.dp = 1", "world size 4"});
  bad(
      [](Config& c) {
        c.parallel.dp = 4;
        c.parallel.ep = 3;
      },
      4, {"parallel.ep = 3", "parallel.dp = 4"});
  bad(
      [](Config& c) {
        c.parallel.dp = 3;
        c.parallel.ep = 3;
      },
      3, {"parallel.ep = 3", "model.num_experts = 8"});
  // The data.
  bad([](Config& c) { c.data.path = "/nonexistent/tokens.bin"; }, 1,
      {"data.path = /nonexistent/tokens.bin", "no such file"});
  bad([](Config& c) { c.data.path = ""; }, 1, {"data.path is empty"});
  bad([](Config& c) { c.data.path = ::testing::TempDir(); }, 1,
      {"data.path", "not a regular file"});
  bad([](Config& c) { c.model.vocab_size = 512; }, 1,
      {"model.vocab_size = 512", "256", "data.format = bytes"});
  // Cross-key ranges.
  bad(
      [](Config& c) {
        c.train.lr = 1e-4;
        c.train.min_lr = 2e-4;
      },
      1, {"train.min_lr = 0.0002", "train.lr = 0.0001"});
  // parallel.layers_per_stage: one count per stage, adding up to the layers.
  auto pp2 = [](Config& c, std::vector<int> layers) {
    c.parallel.pp = 2;
    c.train.num_micro_batches = 4;
    c.parallel.layers_per_stage = std::move(layers);
  };
  bad(
      [&](Config& c) {
        pp2(c, {1, 2});
      },
      2, {"parallel.layers_per_stage = [1, 2] adds up to 3", "model.num_layers = 2"});
  bad([&](Config& c) { pp2(c, {2}); }, 2,
      {"parallel.layers_per_stage = [2] has 1 entries", "2 for parallel.schedule = 1f1b"});
  bad(
      [&](Config& c) {
        pp2(c, {1, 1});
        c.parallel.schedule = "dualpipev";
      },
      2, {"[1, 1] has 2 entries", "4 for parallel.schedule = dualpipev"});
  bad([](Config& c) { c.parallel.layers_per_stage = {2}; }, 1,
      {"parallel.layers_per_stage = [2]", "expected parallel.pp > 1"});
  bad(
      [](Config& c) {
        c.parallel.layers_per_stage = {0, 2};
      },
      1, {"parallel.layers_per_stage[0] = 0, expected >= 1"});
  {
    Config c = good();
    pp2(c, {1, 1});
    EXPECT_NO_THROW(validate(c, 2));
  }
  // Per-key ranges again, for a Config built in code.
  bad([](Config& c) { c.train.beta1 = 1.0; }, 1, {"train.beta1 = 1", "[0, 1)"});
  bad([](Config& c) { c.model.score_function = "relu"; }, 1, {"model.score_function = relu"});
  bad([](Config& c) { c.train.threads = 0; }, 1, {"train.threads = 0"});
}

TEST_F(TrainConfigTest, ValidateChecksTheDataSplits) {
  // seq_len 64, val_fraction 0.1: N_total 80 -> val 8, train 72 > 65 but val < 65.
  Config c = good();
  c.data.path = data_file(80);
  expect_config_error([&] { validate(c, 1); },
                      {"data.val_fraction = 0.1", "validation split of 8 tokens", "65"});
  // Without eval the same file trains.
  c.train.eval_batches = 0;
  EXPECT_NO_THROW(validate(c, 1));
  c.train.eval_batches = 4;
  c.data.val_fraction = 0;
  EXPECT_NO_THROW(validate(c, 1));
  // The training split must exceed seq_len + 1: 65 tokens is one too few, 66 is enough.
  c.data.path = data_file(65);
  expect_config_error([&] { validate(c, 1); },
                      {"training split of 65 tokens", "more than train.seq_len + 1 = 65"});
  c.data.path = data_file(66);
  EXPECT_NO_THROW(validate(c, 1));
  // Validation needs seq_len + 1: 650 tokens at 0.1 -> 65 val is enough, 649 -> 64 is not.
  c.data.val_fraction = 0.1;
  c.data.path = data_file(650);
  EXPECT_NO_THROW(validate(c, 1));
  c.data.path = data_file(649);
  expect_config_error([&] { validate(c, 1); }, {"validation split of 64 tokens"});
}

TEST_F(TrainConfigTest, ValidateChecksTokenFileSizes) {
  Config c = good();
  c.model.vocab_size = 1000;
  c.data.format = "u16";
  c.data.path = data_file(20001);
  expect_config_error([&] { validate(c, 1); },
                      {"20001 bytes", "multiple of 2", "data.format = u16"});
  c.data.path = data_file(20000);
  EXPECT_NO_THROW(validate(c, 1));
  c.data.format = "u32";
  c.data.path = data_file(20002);
  expect_config_error([&] { validate(c, 1); }, {"20002 bytes", "multiple of 4"});
  c.data.path = data_file(20000);
  EXPECT_NO_THROW(validate(c, 1));
}

TEST(TrainConfigSplit, DataSplitAndTokenBytes) {
  const DataSplit s = data_split(1000, 0.1);
  EXPECT_EQ(s.total, 1000u);
  EXPECT_EQ(s.val, 100u);
  EXPECT_EQ(s.train, 900u);
  EXPECT_EQ(data_split(999, 0.1).val, 99u);  // floor
  EXPECT_EQ(data_split(5, 0.0).train, 5u);
  EXPECT_EQ(token_bytes("bytes"), 1);
  EXPECT_EQ(token_bytes("u16"), 2);
  EXPECT_EQ(token_bytes("u32"), 4);
  EXPECT_THROW(token_bytes("u8"), Error);
}

}  // namespace
}  // namespace epx::train
