// serve/: what GET /v1/models says a token costs, against the parameters a
// real model::Model allocates; the decode step times in /metrics; the
// decode mode lookup of --decode-mode auto.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "model/model.hpp"
#include "serve/metrics.hpp"
#include "serve/mode_choice.hpp"
#include "serve/model_cost.hpp"

using namespace epx;

TEST(ServeModelCost, WeightsMatchTheModelsParameters) {
  model::ModelConfig c;
  c.vocab_size = 256;
  c.hidden_size = 32;
  c.num_layers = 4;
  c.num_heads = 4;
  c.intermediate_size = 48;
  c.first_k_dense = 1;
  c.num_experts = 8;
  c.num_shared_experts = 2;
  c.moe_intermediate_size = 24;
  c.top_k = 3;
  model::Model m(c, 0, 1);
  const std::int64_t moe_layers = m.num_moe_layers();
  ASSERT_EQ(moe_layers, 3);
  std::int64_t biases = 0;
  for (const auto& b : m.bias) biases += static_cast<std::int64_t>(b.size());
  const serve::ModelCost cost = serve::model_cost(c);
  EXPECT_EQ(cost.total_weight_bytes, 4 * (m.dense.size() + m.experts.size() + biases));
  // A token reads the dense weights but one embedding row, and top_k of the experts.
  const std::int64_t expert = m.experts.size() / (moe_layers * c.num_experts);
  EXPECT_EQ(cost.active_weight_bytes, 4 * (m.dense.size() - (c.vocab_size - 1) * c.hidden_size +
                                           moe_layers * c.top_k * expert));
  EXPECT_EQ(cost.kv_bytes_per_position, 2 * 4 * 32 * 4);
  EXPECT_EQ(cost.lm_head_flops, 2 * 32 * 256);
  // Matmul FLOPs: 2 x the active weights of the linear layers (no norms, embedding or head).
  const std::int64_t norms = 2 * 32 * 4 + 32;
  EXPECT_EQ(cost.matmul_flops_per_token,
            2 * (cost.active_weight_bytes / 4 - norms - 32 - 32 * 256));
  const nlohmann::json j = nlohmann::json::parse(serve::models_json("m", c, 2));
  EXPECT_EQ(j["data"][0]["id"], "m");
  EXPECT_EQ(j["data"][0]["epx"]["ranks"], 2);
  EXPECT_EQ(j["data"][0]["epx"]["active_weight_bytes"], cost.active_weight_bytes);
}

TEST(ServeMetrics, DecodeStepSecondsByMode) {
  serve::Metrics m(1, 1, 2, 4);
  m.decode_step("low-latency", 0.25);
  m.decode_step("normal", 0.5);
  m.decode_step("low-latency", 0.5);
  const std::string p = m.prometheus();
  EXPECT_NE(p.find("epx_decode_step_seconds_sum{mode=\"low-latency\"} 0.75"), std::string::npos)
      << p;
  EXPECT_NE(p.find("epx_decode_step_seconds_count{mode=\"low-latency\"} 2\n"), std::string::npos);
  EXPECT_NE(p.find("epx_decode_step_seconds_count{mode=\"normal\"} 1\n"), std::string::npos);
}

TEST(ServeDecodeModeChoice, EachBatchTakesTheNextMeasuredSize) {
  serve::DecodeModeChoice c;
  c.batches = {1, 2, 4, 6};
  c.normal_s = {2, 2, 1, 1};
  c.low_latency_s = {1, 1, 2, 0.5};
  EXPECT_TRUE(c.low_latency(1));
  EXPECT_TRUE(c.low_latency(2));
  EXPECT_FALSE(c.low_latency(3));  // measured at 4
  EXPECT_FALSE(c.low_latency(4));
  EXPECT_TRUE(c.low_latency(5));    // measured at 6
  EXPECT_TRUE(c.low_latency(100));  // past them all: the largest
  EXPECT_NE(c.describe().find("4: 1000.000 / 2000.000 normal"), std::string::npos) << c.describe();
}

TEST(ServeMetrics, Fp8DispatchGauge) {
  serve::Metrics m(1, 1, 2, 4);
  EXPECT_NE(m.prometheus().find("\nepx_fp8_dispatch 0\n"), std::string::npos) << m.prometheus();
  m.set_fp8_dispatch(true);
  EXPECT_NE(m.prometheus().find("# TYPE epx_fp8_dispatch gauge\nepx_fp8_dispatch 1\n"),
            std::string::npos)
      << m.prometheus();
}

TEST(ServeDecodeModeChoice, DescribeNamesTheDispatchPayload) {
  serve::DecodeModeChoice c;
  c.batches = {1};
  c.normal_s = {1};
  c.low_latency_s = {2};
  EXPECT_NE(c.describe().find("combine, f32 dispatch, normal / low-latency ms): 1:"),
            std::string::npos)
      << c.describe();
  c.fp8 = true;
  EXPECT_NE(c.describe().find("combine, fp8 dispatch, normal"), std::string::npos) << c.describe();
}
