// The trainer's own collectives, built from MPI point-to-point so that every
// wait is bounded and a rank that does not arrive is named ("timed out after
// 30 s waiting for rank 3 (dp all-reduce of the dense gradients)"), and so
// that every reduction has a stated order: sums run in rank order from rank
// 0 and give the same bits on every rank.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <mpi.h>

namespace epx::train {

// A communicator for the trainer's messages (a duplicate, apart from comm's)
// with the world rank of each of its ranks for error messages.
class Comm {
 public:
  Comm() = default;
  // Collective over `comm`: duplicates it.
  explicit Comm(MPI_Comm comm, double timeout_s);
  Comm(const Comm&) = delete;
  Comm& operator=(const Comm&) = delete;
  Comm(Comm&& o) noexcept;
  Comm& operator=(Comm&& o) noexcept;
  ~Comm();

  MPI_Comm get() const noexcept { return comm_; }
  int rank() const noexcept { return rank_; }
  int size() const noexcept { return size_; }
  int world_rank(int rank) const { return world_.at(static_cast<std::size_t>(rank)); }
  double timeout_s() const noexcept { return timeout_s_; }

 private:
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1;
  std::vector<int> world_;
  double timeout_s_ = 300;
};

// Waits for every request (MPI_REQUEST_NULL allowed), yielding between polls,
// until the comm's timeout; peers[i] is the rank requests[i] talks to. On
// timeout throws Timeout naming the ranks not yet heard from and `phase`,
// after cancelling and releasing the requests still pending (none is left
// pointing at the caller's buffers).
void wait_all(const Comm& comm, std::vector<MPI_Request>& requests, const std::vector<int>& peers,
              const std::string& phase);

// data [n] := sum over ranks of data, identical on every rank: rank r sums
// chunk r ([r n / P, (r+1) n / P)) of every rank's data in rank order, then
// every rank gets every chunk. A bucket runs in the background of other
// work: start() posts the first exchange, progress() moves it on without
// blocking (summing and posting the second exchange once the first is in),
// finish() waits for the end, bounded. Buckets in flight together need
// distinct `bucket` numbers (their messages' tags), the same on every rank.
class OrderedSum {
 public:
  OrderedSum(const Comm& comm, float* data, std::int64_t n, int bucket, std::string phase);
  OrderedSum(const OrderedSum&) = delete;
  OrderedSum& operator=(const OrderedSum&) = delete;
  OrderedSum(OrderedSum&&) = default;
  void start();
  bool progress();  // true when done
  void finish();

 private:
  void post(bool second);
  std::int64_t begin(int q) const { return n_ * q / comm_->size(); }
  const Comm* comm_;
  float* data_;
  std::int64_t n_;
  int bucket_;
  std::string phase_;
  int stage_ = 0;  // 0 not started, 1 first exchange posted, 2 second posted, 3 done
  std::vector<float> scratch_;
  std::vector<MPI_Request> req_;
  std::vector<int> peers_;
};

// OrderedSum start to finish.
void ordered_sum(const Comm& comm, float* data, std::int64_t n, const std::string& phase);

// Every rank's values, concatenated by rank: [P * mine.size()]. Each rank
// must pass the same count.
std::vector<double> allgather(const Comm& comm, const std::vector<double>& mine,
                              const std::string& phase);
std::vector<std::int64_t> allgather(const Comm& comm, const std::vector<std::int64_t>& mine,
                                    const std::string& phase);

// Sums of allgather's rows in rank order (the same bits on every rank).
std::vector<double> sum_over_ranks(const Comm& comm, const std::vector<double>& mine,
                                   const std::string& phase);
std::vector<std::int64_t> sum_over_ranks(const Comm& comm, const std::vector<std::int64_t>& mine,
                                         const std::string& phase);

// Collective: throws on every rank if any rank's `own_error` is non-empty
// (the failing rank its own message, the others one naming it).
void agree(const Comm& comm, const std::string& own_error, const std::string& phase);

}  // namespace epx::train
