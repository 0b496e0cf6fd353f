// Bad input to the balancer: each case gives epx::Error(InvalidArgument) with
// a message that names the argument and the value received.
#include <string>

#include "tests/unit/balancer_testing.hpp"

namespace epx::balancer::testing {
namespace {

TEST(BalancerInput, NegativeLoad) {
  Tensor load = random_load(2, 8, 1, 1, 9);
  load.data<std::int64_t>()[8 + 3] = -4;
  expect_invalid([&] { rebalance_experts(load, 8, 2, 2, 2); }, {"load[1,3] = -4", ">= 0"});
}

TEST(BalancerInput, NonFiniteLoad) {
  Tensor load = zipf_load(1, 4, 1.0, 1);
  load.data<float>()[2] = std::nanf("");
  expect_invalid([&] { rebalance_experts(load, 4, 1, 1, 1, Policy::eplb); },
                 {"load[0,2]", "finite"});
  load.data<float>()[2] = INFINITY;
  expect_invalid([&] { rebalance_experts(load, 4, 1, 1, 1); }, {"load[0,2] = inf"});
}

TEST(BalancerInput, ExpertsNotMultipleOfGroups) {
  expect_invalid([] { rebalance_experts(random_load(1, 10, 1), 12, 4, 2, 4); },
                 {"num_experts = 10", "num_groups = 4"});
}

TEST(BalancerInput, ReplicasNotMultipleOfGpus) {
  expect_invalid([] { rebalance_experts(random_load(1, 8, 1), 10, 2, 2, 4); },
                 {"num_replicas = 10", "num_gpus = 4"});
}

TEST(BalancerInput, FewerReplicasThanExperts) {
  expect_invalid([] { rebalance_experts(random_load(1, 8, 1), 4, 2, 2, 4, Policy::eplb); },
                 {"num_replicas = 4", "num_experts = 8"});
}

TEST(BalancerInput, GpusNotMultipleOfNodes) {
  expect_invalid([] { rebalance_experts(random_load(1, 8, 1), 12, 2, 2, 3); },
                 {"num_gpus = 3", "num_nodes = 2"});
}

TEST(BalancerInput, NonPositiveCounts) {
  const Tensor load = random_load(1, 8, 1);
  expect_invalid([&] { rebalance_experts(load, 8, 0, 1, 1); }, {"num_groups = 0"});
  expect_invalid([&] { rebalance_experts(load, 8, 1, -1, 1); }, {"num_nodes = -1"});
  expect_invalid([&] { rebalance_experts(load, 8, 1, 1, 0); }, {"num_gpus = 0"});
}

TEST(BalancerInput, BadTensors) {
  expect_invalid([] { rebalance_experts(Tensor(), 8, 1, 1, 1); }, {"load is undefined"});
  expect_invalid([] { rebalance_experts(Tensor::zeros({8}, DType::i64), 8, 1, 1, 1); },
                 {"i64[8]", "2 dims"});
  expect_invalid(
      [] {
        rebalance_experts(Tensor::zeros({2, 8}, DType::i32), 8, 1, 1, 1);
      },
      {"i32[2,8]", "i64 or f32"});
  expect_invalid(
      [] {
        rebalance_experts(Tensor::zeros({0, 8}, DType::i64), 8, 1, 1, 1);
      },
      {"at least one layer"});
}

TEST(BalancerInput, EvaluateMismatchedPlacement) {
  const Tensor load = random_load(2, 8, 1, 1, 9);
  Placement p = rebalance_experts(load, 8, 2, 2, 2);
  expect_invalid([&] { evaluate_placement(random_load(3, 8, 1), p, 2); }, {"layers"});
  p.phy2log.data<std::int64_t>()[5] = 8;
  expect_invalid([&] { evaluate_placement(load, p, 2); }, {"phy2log[0,5] = 8"});
}

}  // namespace
}  // namespace epx::balancer::testing
