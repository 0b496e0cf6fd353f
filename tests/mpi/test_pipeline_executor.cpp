// The pipeline Executor against a one-process reference, DualPipe's own test
// recipe: a small deterministic model (linear + tanh stages, f32, fixed
// summation order) run without a pipeline, then with every schedule the rank
// count allows. Losses and weight gradients must be bit-identical. Also: a
// failing stage makes every rank throw (no hang), bad inputs fail together.
#include <gtest/gtest.h>
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <epx/error.hpp>
#include <epx/group.hpp>
#include <epx/pipeline.hpp>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace epx::pipeline {
namespace {

constexpr int kRows = 3;    // tokens per micro-batch
constexpr int kHidden = 8;  // width of every stage

float value(int a, int b, int c) {
  return 0.5f * std::sin(0.37f * a + 1.3f * b + 0.11f * c + 0.1f);
}

// The math of one stage, shared by the pipelined stage and the reference.
struct Weights {
  std::vector<float> w = std::vector<float>(kHidden * kHidden);  // [out, in]
  std::vector<float> b = std::vector<float>(kHidden);
  explicit Weights(int stage) {
    for (int i = 0; i < kHidden * kHidden; ++i) w[i] = value(stage, i, 1);
    for (int i = 0; i < kHidden; ++i) b[i] = value(stage, i, 2);
  }
};

void linear(const Weights& p, const float* x, float* z) {
  for (int r = 0; r < kRows; ++r) {
    for (int o = 0; o < kHidden; ++o) {
      float sum = p.b[o];
      for (int i = 0; i < kHidden; ++i) sum += p.w[o * kHidden + i] * x[r * kHidden + i];
      z[r * kHidden + o] = sum;
    }
  }
}

void activate(const float* z, float* y) {
  for (int k = 0; k < kRows * kHidden; ++k) y[k] = std::tanh(z[k]);
}

void forward(const Weights& p, const float* x, float* y) {
  std::vector<float> z(kRows * kHidden);
  linear(p, x, z.data());
  activate(z.data(), y);
}

// gz = gy * (1 - y^2); gx = gz W.
void backward_input(const Weights& p, const float* y, const float* gy, float* gz, float* gx) {
  for (int k = 0; k < kRows * kHidden; ++k) gz[k] = gy[k] * (1.0f - y[k] * y[k]);
  for (int r = 0; r < kRows; ++r) {
    for (int i = 0; i < kHidden; ++i) {
      float s = 0.0f;
      for (int o = 0; o < kHidden; ++o) s += gz[r * kHidden + o] * p.w[o * kHidden + i];
      gx[r * kHidden + i] = s;
    }
  }
}

// gW += gz^T x, gb += column sums of gz: each micro-batch's share summed
// first, then added, in the order the backwards run.
void add_weight_grad(const float* gz, const float* x, float* gw, float* gb) {
  for (int o = 0; o < kHidden; ++o) {
    float sb = 0.0f;
    for (int r = 0; r < kRows; ++r) sb += gz[r * kHidden + o];
    gb[o] += sb;
    for (int i = 0; i < kHidden; ++i) {
      float s = 0.0f;
      for (int r = 0; r < kRows; ++r) s += gz[r * kHidden + o] * x[r * kHidden + i];
      gw[o * kHidden + i] += s;
    }
  }
}

double mse(int, const Tensor& y, const Tensor& label, Tensor& grad) {
  double loss = 0.0;
  for (std::int64_t k = 0; k < y.numel(); ++k) {
    const float d = y.data<float>()[k] - label.data<float>()[k];
    grad.data<float>()[k] = d;
    loss += 0.5 * static_cast<double>(d) * d;
  }
  return loss;
}

Tensor sample(int mb, int which) {
  Tensor t = Tensor::empty({kRows, kHidden}, DType::f32);
  for (int k = 0; k < kRows * kHidden; ++k) t.data<float>()[k] = value(mb, k, 3 + which);
  return t;
}

// One rank's chunks of the model.
class TinyStage : public Stage {
 public:
  // cut: forward and backward come in two Pieces each (linear | tanh;
  // input grad | weight grad), and every piece run is logged.
  explicit TinyStage(const Schedule& s, int rank, bool cut = false) : cut_(cut) {
    for (int c = 0; c < s.chunks_per_rank; ++c) {
      chunks_.push_back(Chunk{Weights(s.stage_of[rank][c]),
                              Tensor::zeros({kHidden, kHidden}, DType::f32),
                              Tensor::zeros({kHidden}, DType::f32)});
    }
  }
  Tensor forward(int chunk, int mb, const Tensor& input) override {
    Tensor y = Tensor::empty({kRows, kHidden}, DType::f32);
    pipeline::forward(chunks_[chunk].p, input.data<float>(), y.data<float>());
    saved_[{chunk, mb}] = Saved{input.clone(), y, Tensor()};
    return y;
  }
  Tensor backward(int chunk, int mb, const Tensor& grad_output) override {
    Tensor gx = backward_input(chunk, mb, grad_output);
    backward_weight(chunk, mb);
    return gx;
  }
  Tensor backward_input(int chunk, int mb, const Tensor& grad_output) override {
    Saved& s = saved_.at({chunk, mb});
    s.gz = Tensor::empty({kRows, kHidden}, DType::f32);
    Tensor gx = Tensor::empty({kRows, kHidden}, DType::f32);
    pipeline::backward_input(chunks_[chunk].p, s.y.data<float>(), grad_output.data<float>(),
                             s.gz.data<float>(), gx.data<float>());
    return gx;
  }
  void backward_weight(int chunk, int mb) override {
    Saved& s = saved_.at({chunk, mb});
    add_weight_grad(s.gz.data<float>(), s.x.data<float>(), chunks_[chunk].gw.data<float>(),
                    chunks_[chunk].gb.data<float>());
    saved_.erase({chunk, mb});
  }
  std::vector<Tensor> weight_grads(int chunk) override {
    return {chunks_[chunk].gw, chunks_[chunk].gb};
  }
  void zero_grads() {
    for (Chunk& c : chunks_) {
      std::memset(c.gw.raw(), 0, c.gw.nbytes());
      std::memset(c.gb.raw(), 0, c.gb.nbytes());
    }
  }
  std::size_t saved() const { return saved_.size(); }

  std::unique_ptr<Pieces> forward_pieces(int chunk, int mb, const Tensor& input) override {
    if (!cut_) return nullptr;
    return std::make_unique<ForwardPieces>(*this, chunk, mb, input);
  }
  std::unique_ptr<Pieces> backward_pieces(int chunk, int mb, const Tensor& grad_output) override {
    if (!cut_) return nullptr;
    return std::make_unique<BackwardPieces>(*this, chunk, mb, grad_output);
  }
  std::vector<std::string> log;  // pieces in the order they ran: "F0", "B1", ...

 private:
  class ForwardPieces : public Pieces {
   public:
    ForwardPieces(TinyStage& s, int chunk, int mb, const Tensor& x)
        : s_(s), chunk_(chunk), mb_(mb), x_(x.clone()) {}
    bool run_next() override {
      if (next_ == 0) {
        linear(s_.chunks_[chunk_].p, x_.data<float>(), z_.data());
      } else {
        y_ = Tensor::empty({kRows, kHidden}, DType::f32);
        activate(z_.data(), y_.data<float>());
        s_.saved_[{chunk_, mb_}] = Saved{x_, y_, Tensor()};
      }
      s_.log.push_back("F" + std::to_string(next_));
      return ++next_ < 2;
    }
    Tensor result() override { return y_; }

   private:
    TinyStage& s_;
    int chunk_, mb_;
    Tensor x_, y_;
    std::vector<float> z_ = std::vector<float>(kRows * kHidden);
    int next_ = 0;
  };
  class BackwardPieces : public Pieces {
   public:
    BackwardPieces(TinyStage& s, int chunk, int mb, const Tensor& g)
        : s_(s), chunk_(chunk), mb_(mb), g_(g) {}
    bool run_next() override {
      if (next_ == 0) {
        gx_ = s_.backward_input(chunk_, mb_, g_);
      } else {
        s_.backward_weight(chunk_, mb_);
      }
      s_.log.push_back("B" + std::to_string(next_));
      return ++next_ < 2;
    }
    Tensor result() override { return gx_; }

   private:
    TinyStage& s_;
    int chunk_, mb_;
    Tensor g_, gx_;
    int next_ = 0;
  };

  bool cut_ = false;
  struct Chunk {
    Weights p;
    Tensor gw, gb;
  };
  struct Saved {
    Tensor x, y, gz;
  };
  std::vector<Chunk> chunks_;
  std::map<std::pair<int, int>, Saved> saved_;
};

// The whole model in one process, micro-batch after micro-batch. Weight
// grads are kept per (stage, path) and the copies summed at the end, as the
// executor sums DualPipe's two copies.
struct Reference {
  std::vector<double> losses;
  std::vector<std::vector<float>> gw, gb;  // [stage]
};

Reference reference(const Schedule& s) {
  Reference ref;
  const int paths = static_cast<int>(s.paths.size());
  std::vector<std::vector<float>> gw(s.stages * paths, std::vector<float>(kHidden * kHidden, 0.f));
  std::vector<std::vector<float>> gb(s.stages * paths, std::vector<float>(kHidden, 0.f));
  for (int mb = 0; mb < s.microbatches; ++mb) {
    std::vector<Tensor> xs, ys;
    Tensor x = sample(mb, 0);
    for (int st = 0; st < s.stages; ++st) {
      Tensor y = Tensor::empty({kRows, kHidden}, DType::f32);
      forward(Weights(st), x.data<float>(), y.data<float>());
      xs.push_back(x);
      ys.push_back(y);
      x = y;
    }
    Tensor g = Tensor::empty({kRows, kHidden}, DType::f32);
    ref.losses.push_back(mse(mb, ys.back(), sample(mb, 1), g));
    for (int st = s.stages - 1; st >= 0; --st) {
      Tensor gz = Tensor::empty({kRows, kHidden}, DType::f32);
      Tensor gx = Tensor::empty({kRows, kHidden}, DType::f32);
      backward_input(Weights(st), ys[st].data<float>(), g.data<float>(), gz.data<float>(),
                     gx.data<float>());
      const int acc = st * paths + s.path_of[mb];
      add_weight_grad(gz.data<float>(), xs[st].data<float>(), gw[acc].data(), gb[acc].data());
      g = gx;
    }
  }
  for (int st = 0; st < s.stages; ++st) {
    ref.gw.push_back(gw[st * paths]);
    ref.gb.push_back(gb[st * paths]);
    for (int p = 1; p < paths; ++p) {
      for (int k = 0; k < kHidden * kHidden; ++k) ref.gw[st][k] += gw[st * paths + p][k];
      for (int k = 0; k < kHidden; ++k) ref.gb[st][k] += gb[st * paths + p][k];
    }
  }
  return ref;
}

ExecutorOptions options() {
  ExecutorOptions o;
  o.activation_shape = {kRows, kHidden};
  o.timeout_s = 60;
  return o;
}

void run_and_compare(Group& group, const Schedule& s, bool cut = false) {
  SCOPED_TRACE(testing::Message() << to_string(s.kind) << " on " << s.ranks << " ranks, "
                                  << s.microbatches << " micro-batches");
  const Reference ref = reference(s);
  std::vector<Tensor> inputs, labels;
  for (int mb = 0; mb < s.microbatches; ++mb) {
    inputs.push_back(sample(mb, 0));
    labels.push_back(sample(mb, 1));
  }
  TinyStage stage(s, group.rank(), cut);
  Executor executor(group, s, stage, options());
  for (int round = 0; round < 2; ++round) {  // a second step reuses everything
    stage.zero_grads();
    std::vector<double> losses;
    EXPECT_NO_THROW(losses = executor.step(inputs, labels, mse));
    ASSERT_EQ(losses.size(), static_cast<std::size_t>(s.microbatches));
    for (int mb = 0; mb < s.microbatches; ++mb) {
      const int last = s.paths[s.path_of[mb]][s.stages - 1].rank;
      if (last == group.rank()) {
        EXPECT_EQ(losses[mb], ref.losses[mb]) << "micro-batch " << mb;
      } else {
        EXPECT_TRUE(std::isnan(losses[mb])) << "micro-batch " << mb;
      }
    }
    for (int c = 0; c < s.chunks_per_rank; ++c) {
      const int st = s.stage_of[group.rank()][c];
      const std::vector<Tensor> g = stage.weight_grads(c);
      EXPECT_EQ(std::memcmp(g[0].raw(), ref.gw[st].data(), g[0].nbytes()), 0) << "stage " << st;
      EXPECT_EQ(std::memcmp(g[1].raw(), ref.gb[st].data(), g[1].nbytes()), 0) << "stage " << st;
    }
    EXPECT_EQ(stage.saved(), 0u);  // every forward's state released by its backward
  }
  if (cut) {
    // Each FB unit alternated its halves: F0 B0 F1 B1, once per unit and step.
    std::size_t units = 0, alternated = 0;
    for (const Op& op : s.ops[group.rank()]) units += op.kind == OpKind::FB;
    const std::vector<std::string> want = {"F0", "B0", "F1", "B1"};
    for (std::size_t i = 0; i + 4 <= stage.log.size(); ++i)
      alternated += std::equal(want.begin(), want.end(), stage.log.begin() + i);
    EXPECT_EQ(alternated, 2 * units);
  }
}

TEST(PipelineExecutor, EveryScheduleMatchesTheReferenceBitForBit) {
  Group group(MPI_COMM_WORLD);
  const int p = group.size();
  for (ScheduleKind kind : {ScheduleKind::gpipe, ScheduleKind::one_f_one_b, ScheduleKind::zb_h1,
                            ScheduleKind::dualpipe, ScheduleKind::dualpipe_v}) {
    for (int m : {2 * p + 2, 2 * p + 3}) {
      Schedule s;
      try {
        s = make_schedule(kind, {p, m});
      } catch (const Error&) {
        continue;  // e.g. DualPipe on an odd rank count or an odd micro-batch count
      }
      run_and_compare(group, s);
    }
  }
  // Stages that cut their halves into pieces, alternated inside FB units.
  if (p % 2 == 0) run_and_compare(group, dualpipe(p, 2 * p), true);
  run_and_compare(group, dualpipe_v(p, 2 * p + 1), true);
  // Fewer micro-batches than ranks.
  run_and_compare(group, one_f_one_b(p, 1));
  run_and_compare(group, zb_h1(p, 2));
}

class FailingStage : public TinyStage {
 public:
  FailingStage(const Schedule& s, int rank, bool fail) : TinyStage(s, rank), fail_(fail) {}
  Tensor forward(int chunk, int mb, const Tensor& input) override {
    if (fail_ && mb == 1) throw std::runtime_error("test stage: forward of micro-batch 1 failed");
    return TinyStage::forward(chunk, mb, input);
  }

 private:
  bool fail_;
};

TEST(PipelineExecutor, AFailingStageFailsEveryRank) {
  Group group(MPI_COMM_WORLD);
  const int p = group.size();
  const Schedule s = one_f_one_b(p, 2 * p);
  const int culprit = p - 1;
  FailingStage stage(s, group.rank(), group.rank() == culprit);
  Executor executor(group, s, stage, options());
  std::vector<Tensor> inputs, labels;
  for (int mb = 0; mb < s.microbatches; ++mb) {
    inputs.push_back(sample(mb, 0));
    labels.push_back(sample(mb, 1));
  }
  if (group.rank() == culprit) {
    EXPECT_THROW(executor.step(inputs, labels, mse), std::runtime_error);
  } else {
    try {
      executor.step(inputs, labels, mse);
      ADD_FAILURE() << "step returned although rank " << culprit << " failed";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::PeerFailure) << e.what();
      EXPECT_NE(std::string(e.what()).find("rank " + std::to_string(culprit) + " failed"),
                std::string::npos)
          << e.what();
    }
  }
  // The executor refuses further steps on every rank, at once.
  try {
    executor.step(inputs, labels, mse);
    ADD_FAILURE() << "a failed executor ran another step";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::PeerFailure);
  }
}

class StallingStage : public TinyStage {
 public:
  StallingStage(const Schedule& s, int rank, bool stall) : TinyStage(s, rank), stall_(stall) {}
  Tensor forward(int chunk, int mb, const Tensor& input) override {
    if (stall_ && mb == 0) std::this_thread::sleep_for(std::chrono::seconds(4));
    return TinyStage::forward(chunk, mb, input);
  }

 private:
  bool stall_;
};

TEST(PipelineExecutor, AStalledRankEndsInErrorsNotAHang) {
  Group group(MPI_COMM_WORLD);
  const int p = group.size();
  if (p < 2) GTEST_SKIP() << "needs a peer to wait for";
  // Rank 0 sleeps 4 s in its first forward; the others wait 1 s at most per
  // message. Every rank must come back with an error (which one depends on
  // timing: Timeout where a wait ran out, PeerFailure where a notice came).
  const Schedule s = one_f_one_b(p, p);
  StallingStage stage(s, group.rank(), group.rank() == 0);
  ExecutorOptions o = options();
  o.timeout_s = 1;
  Executor executor(group, s, stage, o);
  std::vector<Tensor> inputs, labels;
  for (int mb = 0; mb < s.microbatches; ++mb) {
    inputs.push_back(sample(mb, 0));
    labels.push_back(sample(mb, 1));
  }
  try {
    executor.step(inputs, labels, mse);
    ADD_FAILURE() << "step returned although rank 0 stalled past the timeout";
  } catch (const Error& e) {
    EXPECT_TRUE(e.code() == ErrorCode::Timeout || e.code() == ErrorCode::PeerFailure) << e.what();
    if (group.rank() == 1 && e.code() == ErrorCode::Timeout) {
      EXPECT_NE(std::string(e.what()).find("rank 0"), std::string::npos) << e.what();
    }
  }
  // Let rank 0 leave its stall before the next test's collectives.
  MPI_Barrier(MPI_COMM_WORLD);
}

TEST(PipelineExecutor, MissingInputsFailOnEveryRank) {
  Group group(MPI_COMM_WORLD);
  const int p = group.size();
  const Schedule s = gpipe(p, 3);
  TinyStage stage(s, group.rank());
  Executor executor(group, s, stage, options());
  std::vector<Tensor> inputs(3), labels;
  for (int mb = 0; mb < 3; ++mb) labels.push_back(sample(mb, 1));
  try {
    executor.step(inputs, labels, mse);
    ADD_FAILURE() << "no error for missing inputs";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::InvalidArgument) << e.what();
  }
  // Nothing moved: the same executor runs once the inputs are there.
  for (int mb = 0; mb < 3; ++mb) inputs[mb] = sample(mb, 0);
  EXPECT_NO_THROW(executor.step(inputs, labels, mse));
}

TEST(PipelineExecutor, BadArgumentsOnOneRankFailEveryRank) {
  Group group(MPI_COMM_WORLD);
  const Schedule s = one_f_one_b(group.size(), 2);
  TinyStage stage(s, group.rank());
  ExecutorOptions o = options();
  if (group.rank() == group.size() - 1) o.activation_shape.clear();
  try {
    Executor executor(group, s, stage, o);
    ADD_FAILURE() << "no error although the last rank gave no activation shape";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::InvalidArgument) << e.what();
  }
}

}  // namespace
}  // namespace epx::pipeline
