// The MPI_Alltoallv dispatcher that most users write, as the baseline that
// epx is measured against. Same semantics (and bits) as epx::comm::Buffer:
// - dispatch: each token goes once to every rank holding at least one of its
//   experts; a rank receives rows ordered by source rank, then source token;
//   topk_idx comes back as local expert ids (-1 elsewhere), topk_weights as 0
//   where the id is -1; with fp8 the rows are quantized (per token, 1x128
//   blocks) before they are sent.
// - combine: rows go back the same way and each token's rows are summed in
//   ascending rank order in f32, rounded once to y's dtype.
// The data path is the usual one: permute rows into a send buffer (one copy),
// MPI_Alltoall the counts, MPI_Alltoallv the rows (another copy, or more),
// then rewrite the ids. Buffers are kept between calls, as a tuned user
// program would, so allocation costs do not inflate the comparison.
#pragma once

#include <mpi.h>

#include <cstddef>
#include <cstdint>
#include <epx/tensor.hpp>
#include <map>
#include <vector>

#include "tests/support/inputs.hpp"

namespace epx::bench {

// fp8 / ue8m0: the payload as the references send it.
using BaselineOptions = test::PayloadFormat;

// What a rank receives. The tensors view the dispatcher's buffers and stay
// valid until its next dispatch.
struct BaselineDispatch {
  Tensor x;                                     // [M,H] x's dtype, or e4m3 with fp8
  Tensor x_scales;                              // [M,H/128] f32 with fp8, else undefined
  Tensor topk_idx;                              // [M,K] i64 local expert ids
  Tensor topk_weights;                          // [M,K] f32
  std::vector<int> num_recv_tokens_per_expert;  // per local expert
  std::vector<int> recv_counts;                 // rows received from each rank
};

class AlltoallvDispatcher {
 public:
  AlltoallvDispatcher(MPI_Comm comm, int num_experts);
  ~AlltoallvDispatcher();
  AlltoallvDispatcher(const AlltoallvDispatcher&) = delete;
  AlltoallvDispatcher& operator=(const AlltoallvDispatcher&) = delete;

  // Once per routing (the counterpart of get_dispatch_layout): which tokens
  // each rank gets, and where combine finds each token's returned rows.
  void plan(const Tensor& topk_idx);

  // x: bf16/f32 [T,H]; topk_idx/topk_weights as given to plan(). Collective.
  const BaselineDispatch& dispatch(const Tensor& x, const Tensor& topk_idx,
                                   const Tensor& topk_weights, const BaselineOptions& options);

  // y: bf16/f32 [M,H'], one row per row of the last dispatch. Returns [T,H'] in
  // y's dtype, valid until the next combine. Collective.
  Tensor combine(const Tensor& y);

  // Rows this rank sends in dispatch (and receives back in combine).
  std::int64_t num_send_rows() const { return total_send_; }
  // Rows this rank sends to each rank in dispatch (after plan()).
  const std::vector<int>& send_counts() const { return send_counts_; }
  // Rows this rank received from each rank in the last dispatch (combine sends them back).
  const std::vector<int>& recv_counts() const { return recv_counts_; }

 private:
  MPI_Datatype row_type(std::size_t bytes);  // a contiguous row of `bytes`, cached

  MPI_Comm comm_;
  int rank_ = 0;
  int size_ = 1;
  int num_experts_ = 0;
  std::int64_t num_tokens_ = 0;

  // plan()
  std::vector<std::vector<std::int64_t>> tokens_to_;  // per destination rank, ascending
  std::vector<int> send_counts_, send_displs_;
  std::int64_t total_send_ = 0;
  std::vector<std::int64_t> combine_begin_;  // [T+1] into combine_rows_
  std::vector<std::int64_t> combine_rows_;   // returned-row index per (token, rank), rank ascending

  // dispatch(); recv counts are also combine's send counts
  std::vector<int> recv_counts_, recv_displs_;
  std::vector<std::byte> send_x_, send_scales_, send_idx_, send_weights_;
  std::vector<std::byte> recv_x_, recv_scales_, recv_idx_, recv_weights_;
  BaselineDispatch result_;

  // combine()
  std::vector<std::byte> back_, out_;
  std::vector<float> acc_;

  std::map<std::size_t, MPI_Datatype> row_types_;
};

}  // namespace epx::bench
