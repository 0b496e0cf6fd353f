// The pipeline Executor against a one-process reference, DualPipe's own test
// recipe: a small deterministic model (linear + tanh stages, f32, fixed
// summation order) run without a pipeline, then with every schedule the rank
// count allows. Losses and weight gradients must be bit-identical, in f32
// and (for DualPipe's summed copies) f64. Also: a failing stage makes every
// rank throw (no hang), bad inputs fail together, receives stay in a window.
#include <gtest/gtest.h>
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <epx/balancer.hpp>
#include <epx/comm.hpp>
#include <epx/error.hpp>
#include <epx/group.hpp>
#include <epx/pipeline.hpp>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

namespace epx::pipeline {
namespace {

constexpr int kRows = 3;    // tokens per micro-batch
constexpr int kHidden = 8;  // width of every stage

template <class T>
constexpr DType kDType = std::is_same_v<T, double> ? DType::f64 : DType::f32;

// t.data<T>() where t's type depends on T (no `.template` needed).
template <class T>
T* ptr(Tensor& t) {
  return t.data<T>();
}
template <class T>
const T* ptr(const Tensor& t) {
  return t.data<T>();
}

template <class T>
T value(int a, int b, int c) {
  return T(0.5) * std::sin(T(0.37) * a + T(1.3) * b + T(0.11) * c + T(0.1));
}

// The math of one stage, shared by the pipelined stage and the reference.
template <class T>
struct Weights {
  std::vector<T> w = std::vector<T>(kHidden * kHidden);  // [out, in]
  std::vector<T> b = std::vector<T>(kHidden);
  explicit Weights(int stage) {
    for (int i = 0; i < kHidden * kHidden; ++i) w[i] = value<T>(stage, i, 1);
    for (int i = 0; i < kHidden; ++i) b[i] = value<T>(stage, i, 2);
  }
};

template <class T>
void linear(const Weights<T>& p, const T* x, T* z) {
  for (int r = 0; r < kRows; ++r) {
    for (int o = 0; o < kHidden; ++o) {
      T sum = p.b[o];
      for (int i = 0; i < kHidden; ++i) sum += p.w[o * kHidden + i] * x[r * kHidden + i];
      z[r * kHidden + o] = sum;
    }
  }
}

template <class T>
void activate(const T* z, T* y) {
  for (int k = 0; k < kRows * kHidden; ++k) y[k] = std::tanh(z[k]);
}

template <class T>
void forward(const Weights<T>& p, const T* x, T* y) {
  std::vector<T> z(kRows * kHidden);
  linear(p, x, z.data());
  activate(z.data(), y);
}

// gz = gy * (1 - y^2); gx = gz W.
template <class T>
void backward_input(const Weights<T>& p, const T* y, const T* gy, T* gz, T* gx) {
  for (int k = 0; k < kRows * kHidden; ++k) gz[k] = gy[k] * (T(1) - y[k] * y[k]);
  for (int r = 0; r < kRows; ++r) {
    for (int i = 0; i < kHidden; ++i) {
      T s = 0;
      for (int o = 0; o < kHidden; ++o) s += gz[r * kHidden + o] * p.w[o * kHidden + i];
      gx[r * kHidden + i] = s;
    }
  }
}

// gW += gz^T x, gb += column sums of gz: each micro-batch's share summed
// first, then added, in the order the backwards run.
template <class T>
void add_weight_grad(const T* gz, const T* x, T* gw, T* gb) {
  for (int o = 0; o < kHidden; ++o) {
    T sb = 0;
    for (int r = 0; r < kRows; ++r) sb += gz[r * kHidden + o];
    gb[o] += sb;
    for (int i = 0; i < kHidden; ++i) {
      T s = 0;
      for (int r = 0; r < kRows; ++r) s += gz[r * kHidden + o] * x[r * kHidden + i];
      gw[o * kHidden + i] += s;
    }
  }
}

template <class T>
double mse(int, const Tensor& y, const Tensor& label, Tensor& grad) {
  double loss = 0.0;
  for (std::int64_t k = 0; k < y.numel(); ++k) {
    const T d = ptr<T>(y)[k] - ptr<T>(label)[k];
    ptr<T>(grad)[k] = d;
    loss += 0.5 * static_cast<double>(d) * d;
  }
  return loss;
}

template <class T>
Tensor sample(int mb, int which) {
  Tensor t = Tensor::empty({kRows, kHidden}, kDType<T>);
  for (int k = 0; k < kRows * kHidden; ++k) ptr<T>(t)[k] = value<T>(mb, k, 3 + which);
  return t;
}

// One rank's chunks of the model.
template <class T>
class TinyStage : public Stage {
 public:
  // cut: forward and backward come in two Pieces each (linear | tanh;
  // input grad | weight grad), and every piece run is logged.
  explicit TinyStage(const Schedule& s, int rank, bool cut = false) : cut_(cut) {
    for (int c = 0; c < s.chunks_per_rank; ++c) {
      chunks_.push_back(Chunk{Weights<T>(s.stage_of[rank][c]),
                              Tensor::zeros({kHidden, kHidden}, kDType<T>),
                              Tensor::zeros({kHidden}, kDType<T>)});
    }
  }
  Tensor forward(int chunk, int mb, const Tensor& input) override {
    Tensor y = Tensor::empty({kRows, kHidden}, kDType<T>);
    pipeline::forward(chunks_[chunk].p, ptr<T>(input), ptr<T>(y));
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
    s.gz = Tensor::empty({kRows, kHidden}, kDType<T>);
    Tensor gx = Tensor::empty({kRows, kHidden}, kDType<T>);
    pipeline::backward_input(chunks_[chunk].p, ptr<T>(s.y), ptr<T>(grad_output),
                             ptr<T>(s.gz), ptr<T>(gx));
    return gx;
  }
  void backward_weight(int chunk, int mb) override {
    Saved& s = saved_.at({chunk, mb});
    add_weight_grad(ptr<T>(s.gz), ptr<T>(s.x), ptr<T>(chunks_[chunk].gw),
                    ptr<T>(chunks_[chunk].gb));
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
        linear(s_.chunks_[chunk_].p, ptr<T>(x_), z_.data());
      } else {
        y_ = Tensor::empty({kRows, kHidden}, kDType<T>);
        activate(z_.data(), ptr<T>(y_));
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
    std::vector<T> z_ = std::vector<T>(kRows * kHidden);
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
    Weights<T> p;
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
template <class T>
struct Reference {
  std::vector<double> losses;
  std::vector<std::vector<T>> gw, gb;  // [stage]
};

template <class T>
Reference<T> reference(const Schedule& s) {
  Reference<T> ref;
  const int paths = static_cast<int>(s.paths.size());
  std::vector<std::vector<T>> gw(s.stages * paths, std::vector<T>(kHidden * kHidden, T(0)));
  std::vector<std::vector<T>> gb(s.stages * paths, std::vector<T>(kHidden, T(0)));
  for (int mb = 0; mb < s.microbatches; ++mb) {
    std::vector<Tensor> xs, ys;
    Tensor x = sample<T>(mb, 0);
    for (int st = 0; st < s.stages; ++st) {
      Tensor y = Tensor::empty({kRows, kHidden}, kDType<T>);
      forward(Weights<T>(st), ptr<T>(x), ptr<T>(y));
      xs.push_back(x);
      ys.push_back(y);
      x = y;
    }
    Tensor g = Tensor::empty({kRows, kHidden}, kDType<T>);
    ref.losses.push_back(mse<T>(mb, ys.back(), sample<T>(mb, 1), g));
    for (int st = s.stages - 1; st >= 0; --st) {
      Tensor gz = Tensor::empty({kRows, kHidden}, kDType<T>);
      Tensor gx = Tensor::empty({kRows, kHidden}, kDType<T>);
      backward_input(Weights<T>(st), ptr<T>(ys[st]), ptr<T>(g), ptr<T>(gz),
                     ptr<T>(gx));
      const int acc = st * paths + s.path_of[mb];
      add_weight_grad(ptr<T>(gz), ptr<T>(xs[st]), gw[acc].data(), gb[acc].data());
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

template <class T = float>
ExecutorOptions options() {
  ExecutorOptions o;
  o.activation_shape = {kRows, kHidden};
  o.dtype = kDType<T>;
  o.timeout_s = 60;
  return o;
}

template <class T = float>
void make_batch(int microbatches, std::vector<Tensor>& inputs, std::vector<Tensor>& labels) {
  for (int mb = 0; mb < microbatches; ++mb) {
    inputs.push_back(sample<T>(mb, 0));
    labels.push_back(sample<T>(mb, 1));
  }
}

template <class T = float>
void run_and_compare(Group& group, const Schedule& s, bool cut = false,
                     ExecutorOptions o = options<T>()) {
  SCOPED_TRACE(testing::Message() << to_string(s.kind) << " on " << s.ranks << " ranks, "
                                  << s.microbatches << " micro-batches, " << dtype_name(o.dtype)
                                  << ", receive window " << o.receive_window);
  const Reference<T> ref = reference<T>(s);
  std::vector<Tensor> inputs, labels;
  make_batch<T>(s.microbatches, inputs, labels);
  TinyStage<T> stage(s, group.rank(), cut);
  Executor executor(group, s, stage, o);
  for (int round = 0; round < 2; ++round) {  // a second step reuses everything
    stage.zero_grads();
    std::vector<double> losses;
    const auto t0 = std::chrono::steady_clock::now();
    EXPECT_NO_THROW(losses = executor.step(inputs, labels, mse<T>));
    const double wall_ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    // Receives posted ahead stay within the window (an FB unit's own two may
    // exceed a window of 1).
    EXPECT_LE(executor.last_step_stats().peak_posted_receives, std::max(o.receive_window, 2));
    // The step's parts: each measured, together within the step's wall
    // time; a pair sum exactly where a stage has two copies (DualPipe).
    const ExecutorStats& st = executor.last_step_stats();
    EXPECT_GT(st.ops_ms, 0);
    EXPECT_GT(st.agree_ms, 0);
    EXPECT_GT(st.close_ms, 0);
    EXPECT_LE(st.agree_ms + st.ops_ms + st.copy_sum_ms + st.close_ms, wall_ms);
    if (s.kind == ScheduleKind::dualpipe) {
      EXPECT_GT(st.copy_sum_ms, 0);
    } else {
      EXPECT_EQ(st.copy_sum_ms, 0);
    }
    // No ASSERT: every rank must reach the next round's step.
    EXPECT_EQ(losses.size(), static_cast<std::size_t>(s.microbatches));
    for (int mb = 0; mb < static_cast<int>(losses.size()) && mb < s.microbatches; ++mb) {
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

TEST(PipelineExecutor, DualSchedulesSumTheirCopiesInF64) {
  Group group(MPI_COMM_WORLD);
  const int p = group.size();
  if (p % 2 == 0) run_and_compare<double>(group, dualpipe(p, 2 * p + 2));
  run_and_compare<double>(group, dualpipe_v(p, 2 * p));
}

TEST(PipelineExecutor, ASmallReceiveWindowStillMatches) {
  // Window 1: each op's receives are posted only when it comes up (the
  // slowest, least memory); the results must not change.
  Group group(MPI_COMM_WORLD);
  const int p = group.size();
  ExecutorOptions o = options();
  o.receive_window = 1;
  run_and_compare(group, one_f_one_b(p, 2 * p + 1), false, o);
  run_and_compare(group, dualpipe_v(p, 2 * p), true, o);
}

TEST(PipelineExecutor, EveryScheduleMatchesTheReferenceBitForBit) {
  Group group(MPI_COMM_WORLD);
  const int p = group.size();
  for (ScheduleKind kind : {ScheduleKind::gpipe, ScheduleKind::one_f_one_b, ScheduleKind::zb_h1,
                            ScheduleKind::dualpipe, ScheduleKind::dualpipe_v}) {
    for (int m : {2 * p + 2, 2 * p + 3}) {
      // The only shapes a generator may refuse here: DualPipe needs an even
      // rank count of at least 2 and an even micro-batch count. Any other
      // refusal is a failure, not a skip.
      const bool refusal_expected = kind == ScheduleKind::dualpipe && (p < 2 || p % 2 != 0 || m % 2 != 0);
      Schedule s;
      try {
        s = make_schedule(kind, {p, m});
      } catch (const Error& e) {
        EXPECT_TRUE(refusal_expected) << to_string(kind) << " refused " << p << " ranks x " << m
                                      << " micro-batches: " << e.what();
        continue;  // the same verdict on every rank: the shapes are the same
      }
      EXPECT_FALSE(refusal_expected) << to_string(kind) << " accepted " << p << " ranks x " << m
                                     << " micro-batches, which it should refuse";
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

// Throws in the forward or the backward of micro-batch 1 on one rank.
class FailingStage : public TinyStage<float> {
 public:
  FailingStage(const Schedule& s, int rank, bool fail, bool in_backward)
      : TinyStage<float>(s, rank), fail_(fail), in_backward_(in_backward) {}
  Tensor forward(int chunk, int mb, const Tensor& input) override {
    if (fail_ && !in_backward_ && mb == 1)
      throw std::runtime_error("test stage: forward of micro-batch 1 failed");
    return TinyStage<float>::forward(chunk, mb, input);
  }
  Tensor backward_input(int chunk, int mb, const Tensor& grad_output) override {
    if (fail_ && in_backward_ && mb == 1)
      throw std::runtime_error("test stage: backward of micro-batch 1 failed");
    return TinyStage<float>::backward_input(chunk, mb, grad_output);
  }

 private:
  bool fail_, in_backward_;
};

void expect_every_rank_fails(Group& group, const Schedule& s, int culprit, bool in_backward) {
  SCOPED_TRACE(testing::Message() << to_string(s.kind) << ": rank " << culprit << " fails in its "
                                  << (in_backward ? "backward" : "forward"));
  FailingStage stage(s, group.rank(), group.rank() == culprit, in_backward);
  Executor executor(group, s, stage, options());
  std::vector<Tensor> inputs, labels;
  make_batch(s.microbatches, inputs, labels);
  if (group.rank() == culprit) {
    EXPECT_THROW(executor.step(inputs, labels, mse<float>), std::runtime_error);
  } else {
    try {
      executor.step(inputs, labels, mse<float>);
      ADD_FAILURE() << "step returned although rank " << culprit << " failed";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::PeerFailure) << e.what();
      EXPECT_TRUE(e.poisoned()) << e.what();
      EXPECT_NE(std::string(e.what()).find("rank " + std::to_string(culprit) + " failed"),
                std::string::npos)
          << e.what();
    }
  }
  // The executor refuses further steps on every rank, at once.
  try {
    executor.step(inputs, labels, mse<float>);
    ADD_FAILURE() << "a failed executor ran another step";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::PeerFailure);
  }
}

// Whether the group shows aborted within 30 s (a peer's abort travels on the
// group's own channel, unordered with the executor's messages).
bool eventually_aborted(const Group& group) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!group.aborted() && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  return group.aborted();
}

TEST(PipelineExecutor, AFailingStageFailsEveryRank) {
  const int p = Group(MPI_COMM_WORLD).size();
  {
    // A failure aborts the group (the one failure channel): each case on its own.
    Group group(MPI_COMM_WORLD);
    expect_every_rank_fails(group, one_f_one_b(p, 2 * p), p - 1, false);
  }
  {
    // A middle rank's backward, inside DualPipeV's overlapped units.
    Group group(MPI_COMM_WORLD);
    expect_every_rank_fails(group, dualpipe_v(p, 2 * p), p / 2, true);
  }
}

// The executor's failure goes through Group::abort: every rank's group is
// aborted with the failing rank's reason, and the other modules on the group
// (a comm Buffer, the balancer's LoadTracker) stop at once instead of running
// on, or waiting for a rank that has given up.
TEST(PipelineExecutor, AFailureStopsTheOtherModulesOnTheGroup) {
  Group group(MPI_COMM_WORLD);
  const int p = group.size();
  comm::Buffer buffer(group, {std::size_t{1} << 16, 60});
  balancer::LoadTracker tracker(group, 1, p, 1, 60);
  expect_every_rank_fails(group, one_f_one_b(p, 2 * p), p - 1, false);
  ASSERT_TRUE(eventually_aborted(group));  // local from here on: no collective follows
  EXPECT_NE(group.abort_reason().find("pipeline step: rank " + std::to_string(p - 1) +
                                      " failed: test stage"),
            std::string::npos)
      << group.abort_reason();
  const Tensor idx = Tensor::zeros({4, 1}, DType::i64);
  try {
    buffer.get_dispatch_layout(idx, p);
    ADD_FAILURE() << "the Buffer ran on an aborted group";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::PeerFailure) << e.what();
  }
  try {
    tracker.end_step();
    ADD_FAILURE() << "the LoadTracker summed on an aborted group";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::PeerFailure) << e.what();
  }
}

// The user's abort on one rank reaches every rank's step.
TEST(PipelineExecutor, AUserAbortOnOneRankStopsEveryRank) {
  Group group(MPI_COMM_WORLD);
  const int p = group.size();
  const Schedule s = one_f_one_b(p, 2 * p);
  TinyStage<float> stage(s, group.rank());
  Executor executor(group, s, stage, options());
  std::vector<Tensor> inputs, labels;
  make_batch(s.microbatches, inputs, labels);
  if (group.rank() == 0) group.abort("the user stops the job");
  try {
    executor.step(inputs, labels, mse<float>);
    ADD_FAILURE() << "a step ran although rank 0 aborted the group";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::PeerFailure) << e.what();
    EXPECT_TRUE(e.poisoned()) << e.what();
  }
  EXPECT_TRUE(eventually_aborted(group));
  EXPECT_NE(group.abort_reason().find("the user stops the job"), std::string::npos)
      << group.abort_reason();
}

class StallingStage : public TinyStage<float> {
 public:
  StallingStage(const Schedule& s, int rank, bool stall) : TinyStage<float>(s, rank), stall_(stall) {}
  Tensor forward(int chunk, int mb, const Tensor& input) override {
    if (stall_ && mb == 0) std::this_thread::sleep_for(std::chrono::seconds(4));
    return TinyStage<float>::forward(chunk, mb, input);
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
  make_batch(s.microbatches, inputs, labels);
  try {
    executor.step(inputs, labels, mse<float>);
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
  TinyStage<float> stage(s, group.rank());
  Executor executor(group, s, stage, options());
  std::vector<Tensor> inputs(3), labels;
  for (int mb = 0; mb < 3; ++mb) labels.push_back(sample<float>(mb, 1));
  try {
    executor.step(inputs, labels, mse<float>);
    ADD_FAILURE() << "no error for missing inputs";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::InvalidArgument) << e.what();
    EXPECT_FALSE(e.poisoned()) << "agreed before any step: the executor stays usable";
  }
  // Nothing moved: the same executor runs once the inputs are there.
  for (int mb = 0; mb < 3; ++mb) inputs[mb] = sample<float>(mb, 0);
  EXPECT_NO_THROW(executor.step(inputs, labels, mse<float>));
}

TEST(PipelineExecutor, BadArgumentsOnOneRankFailEveryRank) {
  Group group(MPI_COMM_WORLD);
  const Schedule s = one_f_one_b(group.size(), 2);
  TinyStage<float> stage(s, group.rank());
  ExecutorOptions o = options();
  if (group.rank() == group.size() - 1) o.activation_shape.clear();
  try {
    Executor executor(group, s, stage, o);
    ADD_FAILURE() << "no error although the last rank gave no activation shape";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::InvalidArgument) << e.what();
  }
}

TEST(PipelineExecutor, ActivationShapesThatDifferAcrossRanksFailEveryRank) {
  Group group(MPI_COMM_WORLD);
  if (group.size() < 2) GTEST_SKIP() << "needs two ranks to disagree";
  const Schedule s = one_f_one_b(group.size(), 2);
  TinyStage<float> stage(s, group.rank());
  ExecutorOptions o = options();
  if (group.rank() == 1) o.activation_shape = {kRows + 1, kHidden};
  try {
    Executor executor(group, s, stage, o);
    ADD_FAILURE() << "no error although rank 1 gave another activation shape";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::InvalidArgument) << e.what();
    EXPECT_NE(std::string(e.what()).find("differ across the ranks"), std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace epx::pipeline
