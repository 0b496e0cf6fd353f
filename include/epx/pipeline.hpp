// epx::pipeline: pipeline-parallel schedules as plain data, a validator and
// an executor. A Schedule lists, per rank, the ops that rank runs in order,
// and says which (rank, chunk) holds which model stage; generators build the
// published schedules (GPipe, 1F1B, ZB-H1, DualPipe, DualPipeV), validate()
// proves one runs to the end, and Executor runs it over MPI with the user's
// Stage. The planning tools (the simulator, choose_schedule for `auto`, the
// SVG timeline) are in <epx/pipeline_tools.hpp>.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <epx/config.hpp>
#include <epx/group.hpp>
#include <epx/tensor.hpp>

namespace epx::pipeline {

// F: forward of one micro-batch through one chunk. B: its full backward.
// Bi / W: the two halves of B (input gradient, then weight gradient), split so
// that W can wait and fill a bubble (zero-bubble schedules). FB: the forward of
// one micro-batch and the full backward of another, run as one overlapped unit.
enum class OpKind : std::uint8_t { F, B, Bi, W, FB };

EPX_API const char* to_string(OpKind kind) noexcept;

struct Op {
  OpKind kind = OpKind::F;
  int mb = -1;       // micro-batch; for FB the forward half's
  int chunk = -1;    // local chunk of this rank; for FB the forward half's
  int b_mb = -1;     // FB only: the backward half's micro-batch
  int b_chunk = -1;  // FB only: the backward half's chunk

  static Op forward(int mb, int chunk) { return {OpKind::F, mb, chunk}; }
  static Op backward(int mb, int chunk) { return {OpKind::B, mb, chunk}; }
  static Op input_grad(int mb, int chunk) { return {OpKind::Bi, mb, chunk}; }
  static Op weight_grad(int mb, int chunk) { return {OpKind::W, mb, chunk}; }
  static Op overlapped(int f_mb, int f_chunk, int b_mb, int b_chunk) {
    return {OpKind::FB, f_mb, f_chunk, b_mb, b_chunk};
  }
  // Spelled out, not `= default`: the public headers stay C++17.
  friend bool operator==(const Op& a, const Op& b) {
    return a.kind == b.kind && a.mb == b.mb && a.chunk == b.chunk && a.b_mb == b.b_mb &&
           a.b_chunk == b.b_chunk;
  }
  friend bool operator!=(const Op& a, const Op& b) { return !(a == b); }
};

// "F(3,0)", "FB(5,1|2,0)": the forms used in error messages and pictures.
EPX_API std::string to_string(const Op& op);

struct Location {
  int rank = 0;
  int chunk = 0;
  friend bool operator==(const Location& a, const Location& b) {
    return a.rank == b.rank && a.chunk == b.chunk;
  }
  friend bool operator!=(const Location& a, const Location& b) { return !(a == b); }
};

enum class ScheduleKind { gpipe, one_f_one_b, zb_h1, dualpipe, dualpipe_v };

// Names as on the command line: gpipe, 1f1b, zb-h1, dualpipe, dualpipev.
EPX_API const char* to_string(ScheduleKind kind) noexcept;
// Throws epx::Error(InvalidArgument) naming the accepted spellings.
EPX_API ScheduleKind parse_schedule_kind(std::string_view name);

// The IR that the validator, the simulator and the executor consume.
// Stage s of micro-batch m runs at paths[path_of[m]][s]; stage_of is the same
// placement seen from a rank: stage_of[rank][chunk] = s.
struct Schedule {
  ScheduleKind kind = ScheduleKind::one_f_one_b;
  int ranks = 0;
  int microbatches = 0;
  int stages = 0;           // model stages, numbered from the input
  int chunks_per_rank = 0;  // local chunks on every rank
  // Fraction of the model one chunk holds: 1/ranks, except DualPipeV's
  // 1/(2*ranks). Costs and activations given "per 1/ranks of the model"
  // scale by chunk_fraction * ranks (see scale_costs).
  double chunk_fraction = 0.0;
  std::vector<std::vector<int>> stage_of;    // [rank][chunk] -> stage
  std::vector<std::vector<Location>> paths;  // [path][stage] -> where it runs
  std::vector<int> path_of;                  // [micro-batch] -> path
  std::vector<std::vector<Op>> ops;          // [rank] -> ops in run order
};

struct ScheduleSpec {
  int ranks = 0;
  int microbatches = 0;
};

// Generators. Each throws epx::Error(InvalidArgument) saying why a shape is
// impossible, e.g. "dualpipe needs an even number of ranks, got 7".
//  gpipe:       every F, then every B (activations: all micro-batches).
//  one_f_one_b: ranks-1-r warm-up forwards on rank r, then F/B alternate.
//  zb_h1:       1F1B with B split into Bi + W; rank r defers r weight grads
//               (oldest first) and runs them where 1F1B would wait.
//  dualpipe:    even ranks P; rank r holds stage r (chunk 0, micro-batches
//               0..M/2-1 entering at rank 0) and stage P-1-r (chunk 1,
//               micro-batches M/2..M-1 entering at rank P-1); M even, M >= 2P.
//               The published 8-step program per rank.
//  dualpipe_v:  any N ranks hold 2N stages in a V: rank r holds stage r
//               (chunk 0) and 2N-1-r (chunk 1); every micro-batch enters at
//               rank 0, goes down and back up; M >= 2N. Same 8 steps.
EPX_API Schedule make_schedule(ScheduleKind kind, const ScheduleSpec& spec);
EPX_API Schedule gpipe(int ranks, int microbatches);
EPX_API Schedule one_f_one_b(int ranks, int microbatches);
EPX_API Schedule zb_h1(int ranks, int microbatches);
EPX_API Schedule dualpipe(int ranks, int microbatches);
EPX_API Schedule dualpipe_v(int ranks, int microbatches);

// Throws epx::Error(InvalidArgument) unless the schedule can run: placement
// consistent, every (micro-batch, stage) has one F and either one B or one Bi
// followed by one W on the rank that holds the stage, every F before its
// backward, and no deadlock when each op blocks until its inputs have arrived
// (receives block, sends do not: activations and gradients are posted as
// non-blocking sends). The message names the rank, the op and what it waits for.
EPX_API void validate(const Schedule& schedule);

// A forward or backward cut into pieces (say attention, dispatch, experts,
// combine), run one piece per call, so that two of them can alternate.
class EPX_API Pieces {
 public:
  virtual ~Pieces();
  // Runs the next piece; true while pieces remain.
  virtual bool run_next() = 0;
  // Once all pieces ran: the forward's output, or the backward's input gradient.
  virtual Tensor result() = 0;
};

// One rank's pieces of the model, as the Executor calls them. `chunk` is the
// local chunk (Schedule::stage_of says which stage it is), `mb` the
// micro-batch. A stage keeps what its backward needs between the calls. The
// executor sends returned tensors as they are (no copy): do not write to a
// tensor after returning it.
class EPX_API Stage {
 public:
  virtual ~Stage();
  // Output of the chunk for this micro-batch's input.
  virtual Tensor forward(int chunk, int mb, const Tensor& input) = 0;
  // Full backward: the gradient of the chunk's input; accumulates weight grads.
  virtual Tensor backward(int chunk, int mb, const Tensor& grad_output) = 0;
  // Zero-bubble split: the input gradient now (Bi), the weight gradient later
  // (W, called in the schedule's order, a FIFO per rank). The defaults run the
  // full backward in Bi and nothing in W: correct, without the saving.
  virtual Tensor backward_input(int chunk, int mb, const Tensor& grad_output);
  virtual void backward_weight(int chunk, int mb);
  // An FB unit: the forward of (f_chunk, f_mb) and the full backward of
  // (b_chunk, b_mb), returning the forward's output and setting grad_input.
  // The default alternates the pieces of the two halves when the stage cuts
  // them (forward_pieces / backward_pieces): forward piece 0, backward piece
  // 0, forward piece 1, ... so that a piece that starts an all-to-all and
  // returns (dispatch with a receive hook) lets the other half compute while
  // it flies. Without pieces it runs forward, then backward. A stage may also
  // override it outright.
  virtual Tensor forward_backward(int f_chunk, int f_mb, const Tensor& input, int b_chunk, int b_mb,
                                  const Tensor& grad_output, Tensor& grad_input);
  // The same work as forward / backward, cut into pieces; nullptr (the
  // default) when the stage does not cut it. Used only inside FB units.
  virtual std::unique_ptr<Pieces> forward_pieces(int chunk, int mb, const Tensor& input);
  virtual std::unique_ptr<Pieces> backward_pieces(int chunk, int mb, const Tensor& grad_output);
  // The chunk's weight gradients (f32 or f64, updated in place). Needed only
  // when a stage has two copies (DualPipe): the executor sums each pair across
  // the two ranks that hold it, so both end with the gradient of the whole batch.
  // The executor reads them right after the chunk's last backward op (B, Bi,
  // W or an FB unit's backward half) returns, to send them while the step's
  // other ops run: by then they must be final, and the step must not write
  // them again before it returns (work a Stage defers to another thread or
  // stream must be done when that op returns).
  virtual std::vector<Tensor> weight_grads(int chunk);

 protected:
  // Moves the executor's messages in flight. MPI moves a large message
  // (beyond its eager limit) only while the sending and the receiving rank
  // are inside an MPI call, so without this an activation sent just before a
  // long compute waits for that compute to end, and the next rank idles. A
  // stage whose forward or backward runs long calls it now and then (between
  // layers or pieces); the default FB unit calls it between pieces. Cheap
  // when nothing is pending; does nothing outside Executor::step.
  void progress();

 private:
  friend class Executor;
  std::function<void()> progress_;  // set by the Executor that runs this stage
};

// The loss at the last stage: sets grad_output (allocated like `output`) to
// d loss / d output and returns the loss of micro-batch `mb`.
using LossFn =
    std::function<double(int mb, const Tensor& output, const Tensor& label, Tensor& grad_output)>;

struct ExecutorOptions {
  // Shape and dtype of every activation and gradient between two stages.
  // Why fixed and given, not learned per message: a receive is posted before
  // its data exists, so that the bytes land in place while this rank
  // computes, and MPI needs the size for that. Probing each message
  // (MPI_Improbe) learns the size only once the message is here: small ones
  // would sit in MPI's unexpected queue and be copied again, large ones could
  // not start moving until the receiver asked, which is the overlap lost.
  // Between pipeline stages the shape is (tokens per micro-batch, hidden) and
  // does not change; a model whose activations vary pads to the largest. The
  // constructor checks that every rank gave the same shape and dtype.
  std::vector<std::int64_t> activation_shape;
  DType dtype = DType::f32;
  double timeout_s = 0.0;  // per wait on a peer, > 0 (inf: no limit); 0: EPX_TIMEOUT_S
  // Most receives posted ahead (each holds one activation-sized buffer),
  // counted from the op about to run and posted in the schedule's order: the
  // receives of the next few ops are in place while the current op computes.
  // An op whose own inputs exceed it (an FB unit needs two) still gets them.
  // >= 1; 4 covers the next two FB units, or the next four F/B ops.
  int receive_window = 4;
};

// What one step held at most, per rank: activation-sized receive buffers
// posted ahead (bounded by receive_window), and sends not yet completed.
struct ExecutorStats {
  int peak_posted_receives = 0;
  int peak_pending_sends = 0;
  // Where the step's time went (ms): the input agreement before any op,
  // the ops (what pipeline::simulate models; with DualPipe they include
  // posting each chunk's pair-sum exchange, a copy of its gradients), the
  // wait for and the add of DualPipe's two weight copies (0 where no stage
  // has two), the last sends and the closing agreement.
  double agree_ms = 0, ops_ms = 0, copy_sum_ms = 0, close_ms = 0;
};

class EPX_API Executor {
 public:
  // Collective over pp_group (size == schedule.ranks); validates the schedule.
  Executor(Group& pp_group, Schedule schedule, Stage& stage, ExecutorOptions options = {});
  ~Executor();
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  // Collective. Runs one step of the schedule: inputs[mb] is read on the rank
  // where micro-batch mb's first stage runs, labels[mb] where its last stage
  // runs (elsewhere entries may be empty). Activations and gradients travel
  // as MPI_Isend/Irecv: receives posted options.receive_window ahead in the
  // schedule's order and waited for only when their op runs; sends waited
  // for at the end of the step, their buffers released as they complete. Returns losses[mb] on the rank that computed it, NaN
  // elsewhere. If any rank fails (its stage throws, a wait times out), every
  // rank throws epx::Error and the executor refuses further steps.
  std::vector<double> step(const std::vector<Tensor>& inputs, const std::vector<Tensor>& labels,
                           const LossFn& loss);

  const Schedule& schedule() const noexcept;
  const ExecutorStats& last_step_stats() const noexcept;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace epx::pipeline
