// The whole model's gradient against central finite differences of its loss,
// on one rank and with the experts spread over an EP group of every rank
// (dispatch, expert GEMMs, combine, and their backward through comm).
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include <epx/comm.hpp>
#include <epx/group.hpp>

#include "model/engine.hpp"
#include "model/model.hpp"

namespace epx::test {
namespace {

Group& world() {
  static Group g(MPI_COMM_WORLD);
  return g;
}

double sum_all(double v) {
  double s = 0;
  MPI_Allreduce(&v, &s, 1, MPI_DOUBLE, MPI_SUM, world().comm());
  return s;
}

model::ModelConfig tiny_config(const char* score) {
  model::ModelConfig c;
  c.vocab_size = 23;
  c.hidden_size = 12;
  c.num_layers = 3;  // one dense layer, two MoE layers
  c.num_heads = 2;
  c.intermediate_size = 10;
  c.first_k_dense = 1;
  c.num_experts = 4 * world().size();
  c.num_shared_experts = 1;
  c.moe_intermediate_size = 6;
  c.top_k = 3;
  c.n_group = 2;
  c.topk_group = 2;
  c.score_function = score;
  c.routed_scaling_factor = 2.5;
  c.init_std = 0.4;
  return c;
}

struct TinyModel {
  model::ModelConfig config;
  Group& group = world();
  comm::Buffer buffer{group};
  model::Model model;
  model::Engine engine;
  std::vector<std::int32_t> inputs, targets;
  model::MicroBatch mb;

  explicit TinyModel(const char* score)
      : config(tiny_config(score)),
        model(config, group.rank(), group.size()),
        engine(model, buffer) {
    model.init_random(7);
    std::mt19937 rng(100 + static_cast<unsigned>(group.rank()));
    std::uniform_real_distribution<float> b(-0.05f, 0.05f);
    for (auto& layer : model.bias)
      for (float& x : layer) x = 0.0f;
    std::mt19937 shared_rng(5);  // the bias is replicated: the same on every rank
    for (auto& layer : model.bias)
      for (float& x : layer) x = b(shared_rng);
    const int batch = 2, seq = 5;
    inputs.resize(batch * seq);
    targets.resize(batch * seq);
    std::uniform_int_distribution<int> tok(0, config.vocab_size - 1);
    for (auto& t : inputs) t = tok(rng);
    for (auto& t : targets) t = tok(rng);
    mb = {inputs.data(), targets.data(), batch, seq};
  }

  double loss() { return sum_all(engine.forward_loss(mb)); }
};

// Checks `samples` elements of `store`; `owned` says whether this rank holds
// the store's values (experts: only the owner perturbs; dense: every rank).
void check_store(TinyModel& s, model::ParamStore& store, bool dense, int samples, const char* what) {
  // The analytic gradient of the summed loss: dense grads summed over ranks.
  std::vector<float> g = store.grads;
  if (dense)
    MPI_Allreduce(MPI_IN_PLACE, g.data(), static_cast<int>(g.size()), MPI_FLOAT, MPI_SUM,
                  world().comm());
  const std::int64_t n = store.size();
  std::mt19937 rng(11);
  const int P = world().size();
  int flips = 0, checked = 0;
  for (int i = 0; i < samples; ++i) {
    // Every rank picks the same (owner, index); experts are perturbed only by their owner.
    const int owner = dense ? -1 : static_cast<int>(rng() % static_cast<unsigned>(P));
    const std::int64_t idx = static_cast<std::int64_t>(rng() % static_cast<unsigned>(n));
    const bool mine = dense || owner == world().rank();
    const float eps = 2e-3f;
    const float keep = store.values[idx];
    if (mine) store.values[idx] = keep + eps;
    const double up = s.loss();
    std::vector<std::int64_t> r_up = s.engine.last_routing();
    if (mine) store.values[idx] = keep - eps;
    const double down = s.loss();
    std::vector<std::int64_t> r_down = s.engine.last_routing();
    if (mine) store.values[idx] = keep;
    int flipped = (r_up != r_down) ? 1 : 0;
    MPI_Allreduce(MPI_IN_PLACE, &flipped, 1, MPI_INT, MPI_MAX, world().comm());
    if (flipped) {
      ++flips;  // the selection changed inside the step: finite differences are meaningless
      continue;
    }
    double want = (up - down) / (2.0 * eps);
    double have = mine ? g[idx] : 0.0;
    if (!dense) {
      MPI_Allreduce(MPI_IN_PLACE, &have, 1, MPI_DOUBLE, MPI_SUM, world().comm());
    }
    ++checked;
    EXPECT_NEAR(have, want, 2e-3 + 3e-2 * std::abs(want))
        << what << " element " << idx << " (" << (dense ? "dense" : "expert on rank ") << owner
        << ")";
  }
  if (world().rank() == 0 && flips > 0)
    std::printf("[ note ] %s: %d of %d samples skipped, the routing flipped under +-eps\n", what,
                flips, samples);
  EXPECT_GE(checked, samples / 2) << what << ": too many routing flips to judge";
}

class ModelGradient : public ::testing::TestWithParam<const char*> {};

TEST_P(ModelGradient, MatchesFiniteDifferences) {
  TinyModel s(GetParam());
  s.model.dense.zero_grads();
  s.model.experts.zero_grads();
  s.engine.forward_backward(s.mb, 1.0f);
  check_store(s, s.model.dense, true, 60, "dense");
  check_store(s, s.model.experts, false, 40, "experts");
  // The selection bias gets no gradient, and the loss does not move with it
  // unless the selection changes.
}

INSTANTIATE_TEST_SUITE_P(Scores, ModelGradient, ::testing::Values("sigmoid", "softmax"));

TEST(ModelGradient, AccumulatesOverMicroBatches) {
  TinyModel s("sigmoid");
  s.model.dense.zero_grads();
  s.model.experts.zero_grads();
  s.engine.forward_backward(s.mb, 1.0f);
  const std::vector<float> once_d = s.model.dense.grads, once_x = s.model.experts.grads;
  s.engine.forward_backward(s.mb, 1.0f);
  // The same micro-batch twice: twice the gradient, to f32 rounding (ops that
  // add row by row into a gradient, and BLAS adding into a non-zero output,
  // round (g + a) + b, not 2 g).
  int bad = 0;
  for (std::size_t i = 0; i < once_d.size() && bad < 5; ++i)
    if (std::abs(s.model.dense.grads[i] - 2 * once_d[i]) > 1e-5f * std::abs(2 * once_d[i]) + 1e-9f)
      ADD_FAILURE() << "dense grad " << i << ": " << s.model.dense.grads[i] << " vs 2 x " << once_d[i], ++bad;
  for (std::size_t i = 0; i < once_x.size() && bad < 5; ++i)
    if (std::abs(s.model.experts.grads[i] - 2 * once_x[i]) > 1e-5f * std::abs(2 * once_x[i]) + 1e-9f)
      ADD_FAILURE() << "expert grad " << i << ": " << s.model.experts.grads[i] << " vs 2 x " << once_x[i], ++bad;
}

}  // namespace
}  // namespace epx::test
