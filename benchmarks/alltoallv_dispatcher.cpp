#include "benchmarks/alltoallv_dispatcher.hpp"

#include <algorithm>
#include <cstring>
#include <epx/error.hpp>
#include <epx/kernels.hpp>
#include <string>
#include <tuple>
#include <type_traits>

#include "kernels/float_convert.hpp"

namespace epx::bench {

namespace {

void require(bool ok, const std::string& message) {
  if (!ok) throw Error(ErrorCode::InvalidArgument, "alltoallv baseline: " + message);
}

// Grows a buffer to `bytes` (never shrinks, so steady-state calls allocate nothing).
std::byte* ensure(std::vector<std::byte>& buf, std::size_t bytes) {
  if (buf.size() < bytes) buf.resize(bytes);
  return buf.data();
}

// Copies row `src_row` of `src` to row `dst_row` of `dst`, rows of `bytes`.
inline void copy_row(std::byte* dst, std::int64_t dst_row, const void* src, std::int64_t src_row,
                     std::size_t bytes) {
  std::memcpy(dst + static_cast<std::size_t>(dst_row) * bytes,
              static_cast<const std::byte*>(src) + static_cast<std::size_t>(src_row) * bytes,
              bytes);
}

std::vector<int> prefix_sums(const std::vector<int>& counts) {
  std::vector<int> displs(counts.size(), 0);
  for (std::size_t i = 1; i < counts.size(); ++i) displs[i] = displs[i - 1] + counts[i - 1];
  return displs;
}

// Sums each token's returned rows in ascending rank order in f32 and rounds
// once. T is uint16_t (bf16 bits) or float.
template <class T>
void reduce_rows(const T* back, std::int64_t hidden, const std::vector<std::int64_t>& begin,
                 const std::vector<std::int64_t>& rows, std::vector<float>& acc, T* out) {
  acc.resize(hidden);
  const std::int64_t tokens = static_cast<std::int64_t>(begin.size()) - 1;
  for (std::int64_t t = 0; t < tokens; ++t) {
    std::fill(acc.begin(), acc.end(), 0.0f);
    for (std::int64_t i = begin[t]; i < begin[t + 1]; ++i) {
      const T* row = back + rows[i] * hidden;
      for (std::int64_t h = 0; h < hidden; ++h) {
        if constexpr (std::is_same_v<T, float>)
          acc[h] += row[h];
        else
          acc[h] += kernels::bf16_to_float(row[h]);
      }
    }
    T* dst = out + t * hidden;
    for (std::int64_t h = 0; h < hidden; ++h) {
      if constexpr (std::is_same_v<T, float>)
        dst[h] = acc[h];
      else
        dst[h] = kernels::float_to_bf16(acc[h]);
    }
  }
}

}  // namespace

AlltoallvDispatcher::AlltoallvDispatcher(MPI_Comm comm, int num_experts)
    : comm_(comm), num_experts_(num_experts) {
  MPI_Comm_rank(comm_, &rank_);
  MPI_Comm_size(comm_, &size_);
  require(num_experts > 0 && num_experts % size_ == 0,
          "num_experts = " + std::to_string(num_experts) +
              ", expected a positive multiple of the " + std::to_string(size_) + " ranks");
}

AlltoallvDispatcher::~AlltoallvDispatcher() {
  for (auto& [bytes, type] : row_types_) MPI_Type_free(&type);
}

MPI_Datatype AlltoallvDispatcher::row_type(std::size_t bytes) {
  auto it = row_types_.find(bytes);
  if (it != row_types_.end()) return it->second;
  // Counts in rows, not bytes: an int byte count overflows at 2 GiB.
  MPI_Datatype type;
  MPI_Type_contiguous(static_cast<int>(bytes), MPI_BYTE, &type);
  MPI_Type_commit(&type);
  row_types_.emplace(bytes, type);
  return type;
}

void AlltoallvDispatcher::plan(const Tensor& topk_idx) {
  require(topk_idx.dtype() == DType::i64 && topk_idx.ndim() == 2,
          "topk_idx is " + topk_idx.describe() + ", expected i64 [T,K]");
  num_tokens_ = topk_idx.dim(0);
  const std::int64_t k = topk_idx.dim(1);
  const int experts_per_rank = num_experts_ / size_;
  const std::int64_t* idx = topk_idx.data<std::int64_t>();

  tokens_to_.assign(size_, {});
  combine_begin_.assign(num_tokens_ + 1, 0);
  std::vector<char> hit(size_);
  std::vector<std::pair<int, std::int64_t>> sent;  // (rank, index in tokens_to_[rank]) per row
  for (std::int64_t t = 0; t < num_tokens_; ++t) {
    std::fill(hit.begin(), hit.end(), 0);
    for (std::int64_t j = 0; j < k; ++j) {
      const std::int64_t e = idx[t * k + j];
      require(e >= -1 && e < num_experts_,
              "topk_idx[" + std::to_string(t) + "," + std::to_string(j) + "] = " +
                  std::to_string(e) + ", expected -1 or < " + std::to_string(num_experts_));
      if (e >= 0) hit[e / experts_per_rank] = 1;
    }
    for (int d = 0; d < size_; ++d) {
      if (!hit[d]) continue;
      sent.emplace_back(d, static_cast<std::int64_t>(tokens_to_[d].size()));
      tokens_to_[d].push_back(t);
    }
    combine_begin_[t + 1] = static_cast<std::int64_t>(sent.size());
  }
  send_counts_.resize(size_);
  for (int d = 0; d < size_; ++d) send_counts_[d] = static_cast<int>(tokens_to_[d].size());
  send_displs_ = prefix_sums(send_counts_);
  total_send_ = static_cast<std::int64_t>(sent.size());
  // Combine receives the rows back in send order: rank d's block, then by token.
  combine_rows_.resize(sent.size());
  for (std::size_t i = 0; i < sent.size(); ++i)
    combine_rows_[i] = send_displs_[sent[i].first] + sent[i].second;
}

const BaselineDispatch& AlltoallvDispatcher::dispatch(const Tensor& x, const Tensor& topk_idx,
                                                      const Tensor& topk_weights,
                                                      const BaselineOptions& options) {
  require(x.ndim() == 2 && x.dim(0) == num_tokens_ &&
              (x.dtype() == DType::bf16 || x.dtype() == DType::f32),
          "x is " + x.describe() + ", expected bf16/f32 [" + std::to_string(num_tokens_) + ",H]");
  require(topk_idx.ndim() == 2 && topk_idx.dim(0) == num_tokens_, "topk_idx does not match plan()");
  require(topk_weights.dtype() == DType::f32 && topk_weights.shape() == topk_idx.shape(),
          "topk_weights is " + topk_weights.describe() + ", expected f32 like topk_idx");
  const std::int64_t hidden = x.dim(1);
  const std::int64_t k = topk_idx.dim(1);

  // 1. The payload: quantized once per token before the permute, as users do.
  Tensor payload = x;
  Tensor scales;
  if (options.fp8) std::tie(payload, scales) = kernels::per_token_cast_to_fp8(x, options.ue8m0);
  const std::size_t x_bytes = static_cast<std::size_t>(hidden) * dtype_size(payload.dtype());
  const std::size_t s_bytes =
      options.fp8 ? static_cast<std::size_t>(scales.dim(1)) * sizeof(float) : 0;
  const std::size_t i_bytes = static_cast<std::size_t>(k) * sizeof(std::int64_t);
  const std::size_t w_bytes = static_cast<std::size_t>(k) * sizeof(float);

  // 2. Permute into per-destination blocks (the first copy of every byte).
  const std::size_t n_send = static_cast<std::size_t>(total_send_);
  std::byte* sx = ensure(send_x_, n_send * x_bytes);
  std::byte* ss = ensure(send_scales_, n_send * s_bytes);
  std::byte* si = ensure(send_idx_, n_send * i_bytes);
  std::byte* sw = ensure(send_weights_, n_send * w_bytes);
  for (int d = 0; d < size_; ++d) {
    std::int64_t pos = send_displs_[d];
    for (std::int64_t t : tokens_to_[d]) {
      copy_row(sx, pos, payload.raw(), t, x_bytes);
      if (options.fp8) copy_row(ss, pos, scales.raw(), t, s_bytes);
      copy_row(si, pos, topk_idx.raw(), t, i_bytes);
      copy_row(sw, pos, topk_weights.raw(), t, w_bytes);
      ++pos;
    }
  }

  // 3. Counts, then 4. rows.
  recv_counts_.resize(size_);
  MPI_Alltoall(send_counts_.data(), 1, MPI_INT, recv_counts_.data(), 1, MPI_INT, comm_);
  recv_displs_ = prefix_sums(recv_counts_);
  const std::int64_t m = recv_displs_.back() + recv_counts_.back();
  const std::size_t n_recv = static_cast<std::size_t>(m);
  std::byte* rx = ensure(recv_x_, n_recv * x_bytes);
  std::byte* rs = ensure(recv_scales_, n_recv * s_bytes);
  std::byte* ri = ensure(recv_idx_, n_recv * i_bytes);
  std::byte* rw = ensure(recv_weights_, n_recv * w_bytes);
  auto exchange = [&](const std::byte* send, std::byte* recv, std::size_t bytes) {
    MPI_Datatype type = row_type(bytes);
    MPI_Alltoallv(send, send_counts_.data(), send_displs_.data(), type, recv, recv_counts_.data(),
                  recv_displs_.data(), type, comm_);
  };
  exchange(sx, rx, x_bytes);
  if (options.fp8) exchange(ss, rs, s_bytes);
  exchange(si, ri, i_bytes);
  exchange(sw, rw, w_bytes);

  // 5. Global expert ids to local ones; weights of other ranks' experts to 0.
  const std::int64_t experts_per_rank = num_experts_ / size_;
  const std::int64_t first = rank_ * experts_per_rank;
  std::int64_t* ids = reinterpret_cast<std::int64_t*>(ri);
  float* weights = reinterpret_cast<float*>(rw);
  result_.num_recv_tokens_per_expert.assign(experts_per_rank, 0);
  for (std::int64_t i = 0; i < m * k; ++i) {
    const std::int64_t local = ids[i] - first;
    if (ids[i] >= 0 && local >= 0 && local < experts_per_rank) {
      ids[i] = local;
      ++result_.num_recv_tokens_per_expert[local];
    } else {
      ids[i] = -1;
      weights[i] = 0.0f;
    }
  }

  result_.x = Tensor::wrap(rx, {m, hidden}, payload.dtype());
  result_.x_scales = options.fp8 ? Tensor::wrap(rs, {m, scales.dim(1)}, DType::f32) : Tensor();
  result_.topk_idx = Tensor::wrap(ri, {m, k}, DType::i64);
  result_.topk_weights = Tensor::wrap(rw, {m, k}, DType::f32);
  result_.recv_counts = recv_counts_;
  return result_;
}

Tensor AlltoallvDispatcher::combine(const Tensor& y) {
  const std::int64_t m = recv_displs_.empty() ? -1 : recv_displs_.back() + recv_counts_.back();
  require(m >= 0, "combine before dispatch");
  require(y.ndim() == 2 && y.dim(0) == m && (y.dtype() == DType::bf16 || y.dtype() == DType::f32),
          "y is " + y.describe() + ", expected bf16/f32 [" + std::to_string(m) + ",H]");
  const std::int64_t hidden = y.dim(1);
  const std::size_t row_bytes = static_cast<std::size_t>(hidden) * dtype_size(y.dtype());

  // Rows go back to where they came from: dispatch's receive layout is the
  // send layout now, and the rows arrive in this rank's send order.
  std::byte* back = ensure(back_, static_cast<std::size_t>(total_send_) * row_bytes);
  MPI_Datatype type = row_type(row_bytes);
  MPI_Alltoallv(y.raw(), recv_counts_.data(), recv_displs_.data(), type, back, send_counts_.data(),
                send_displs_.data(), type, comm_);

  std::byte* out = ensure(out_, static_cast<std::size_t>(num_tokens_) * row_bytes);
  if (y.dtype() == DType::bf16) {
    reduce_rows(reinterpret_cast<const std::uint16_t*>(back), hidden, combine_begin_, combine_rows_,
                acc_, reinterpret_cast<std::uint16_t*>(out));
  } else {
    reduce_rows(reinterpret_cast<const float*>(back), hidden, combine_begin_, combine_rows_, acc_,
                reinterpret_cast<float*>(out));
  }
  return Tensor::wrap(out, {num_tokens_, hidden}, y.dtype());
}

}  // namespace epx::bench
