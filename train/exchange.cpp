#include "train/exchange.hpp"

#include <cstring>
#include <sstream>

#include "core/check.hpp"
#include "core/wait.hpp"

namespace epx::train {

namespace {

constexpr int kTagReduce = 7101;
constexpr int kTagGather = 7102;
constexpr int kTagAllgather = 7103;

}  // namespace

Comm::Comm(MPI_Comm comm, double timeout_s) : timeout_s_(timeout_s) {
  MPI_Comm_dup(comm, &comm_);
  MPI_Comm_rank(comm_, &rank_);
  MPI_Comm_size(comm_, &size_);
  int me = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &me);
  world_.resize(static_cast<std::size_t>(size_));
  MPI_Allgather(&me, 1, MPI_INT, world_.data(), 1, MPI_INT, comm_);
}

Comm::Comm(Comm&& o) noexcept { *this = std::move(o); }

Comm& Comm::operator=(Comm&& o) noexcept {
  if (this != &o) {
    if (comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
    comm_ = o.comm_;
    rank_ = o.rank_;
    size_ = o.size_;
    world_ = std::move(o.world_);
    timeout_s_ = o.timeout_s_;
    o.comm_ = MPI_COMM_NULL;
  }
  return *this;
}

Comm::~Comm() {
  // Freeing is local in practice (MPI_Comm_free only marks the communicator);
  // after a failure the pending requests are abandoned with the process.
  if (comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
}

void wait_all(const Comm& comm, std::vector<MPI_Request>& requests, const std::vector<int>& peers,
              const std::string& phase) {
  const core::Deadline deadline(comm.timeout_s());
  core::Backoff backoff;
  for (;;) {
    int done = 0;
    MPI_Testall(static_cast<int>(requests.size()), requests.data(), &done, MPI_STATUSES_IGNORE);
    if (done) return;
    if (deadline.expired()) break;
    backoff.pause();
  }
  std::ostringstream missing;
  bool first = true;
  for (std::size_t i = 0; i < requests.size(); ++i) {
    if (requests[i] == MPI_REQUEST_NULL) continue;
    int done = 0;
    MPI_Test(&requests[i], &done, MPI_STATUS_IGNORE);
    if (done) continue;
    missing << (first ? "" : ", ") << comm.world_rank(peers[i]);
    first = false;
  }
  // The caller's buffers go away with the exception: cancel what is still
  // pending (a receive not yet matched cancels at once), give the
  // cancellations a moment, and release the rest, so that no request is
  // left pointing at freed memory while the job aborts.
  for (MPI_Request& q : requests)
    if (q != MPI_REQUEST_NULL) MPI_Cancel(&q);
  const core::Deadline grace(1.0);
  for (;;) {
    int done = 0;
    MPI_Testall(static_cast<int>(requests.size()), requests.data(), &done, MPI_STATUSES_IGNORE);
    if (done || grace.expired()) break;
    backoff.pause();
  }
  for (MPI_Request& q : requests)
    if (q != MPI_REQUEST_NULL) MPI_Request_free(&q);
  EPX_THROW(Timeout, phase, ": timed out after ", comm.timeout_s(), " s waiting for rank ",
            missing.str(), " (stalled, dead, or not making the same call)");
}

OrderedSum::OrderedSum(const Comm& comm, float* data, std::int64_t n, int bucket, std::string phase)
    : comm_(&comm), data_(data), n_(n), bucket_(bucket), phase_(std::move(phase)) {}

void OrderedSum::post(bool second) {
  const int P = comm_->size(), r = comm_->rank();
  const std::int64_t mine = begin(r + 1) - begin(r);
  const int tag = (second ? kTagGather : kTagReduce) + 16 * bucket_;
  req_.clear();
  peers_.clear();
  for (int q = 0; q < P; ++q) {
    if (q == r) continue;
    const auto count = static_cast<int>(begin(q + 1) - begin(q));
    req_.emplace_back();
    if (second) {  // every summed chunk to every rank
      MPI_Irecv(data_ + begin(q), count, MPI_FLOAT, q, tag, comm_->get(), &req_.back());
    } else {  // chunk q of my data to rank q; chunk r of everyone's data to me
      MPI_Irecv(scratch_.data() + mine * q, static_cast<int>(mine), MPI_FLOAT, q, tag, comm_->get(),
                &req_.back());
    }
    peers_.push_back(q);
    req_.emplace_back();
    if (second) {
      MPI_Isend(data_ + begin(r), static_cast<int>(mine), MPI_FLOAT, q, tag, comm_->get(), &req_.back());
    } else {
      MPI_Isend(data_ + begin(q), count, MPI_FLOAT, q, tag, comm_->get(), &req_.back());
    }
    peers_.push_back(q);
  }
}

void OrderedSum::start() {
  if (comm_->size() == 1 || n_ == 0) {
    stage_ = 3;
    return;
  }
  const int r = comm_->rank();
  scratch_.resize(static_cast<std::size_t>((begin(r + 1) - begin(r)) * comm_->size()));
  post(false);
  stage_ = 1;
}

bool OrderedSum::progress() {
  if (stage_ == 3) return true;
  EPX_CHECK(stage_ != 0, Internal, phase_, ": progress() before start()");
  int done = 0;
  MPI_Testall(static_cast<int>(req_.size()), req_.data(), &done, MPI_STATUSES_IGNORE);
  if (!done) return false;
  if (stage_ == 2) {
    stage_ = 3;
    return true;
  }
  // Sum my chunk in rank order, ((x_0 + x_1) + x_2) + ..., x_r being my own.
  const int P = comm_->size(), r = comm_->rank();
  const std::int64_t mine = begin(r + 1) - begin(r);
  std::memcpy(scratch_.data() + mine * r, data_ + begin(r), sizeof(float) * mine);
  float* out = data_ + begin(r);
  std::memcpy(out, scratch_.data(), sizeof(float) * mine);
  for (int q = 1; q < P; ++q) {
    const float* x = scratch_.data() + mine * q;
    for (std::int64_t i = 0; i < mine; ++i) out[i] += x[i];
  }
  post(true);
  stage_ = 2;
  return false;
}

void OrderedSum::finish() {
  if (stage_ == 0) start();
  while (!progress()) {
    wait_all(*comm_, req_, peers_, phase_);  // bounded; returns once this exchange is in
  }
}

void ordered_sum(const Comm& comm, float* data, std::int64_t n, const std::string& phase) {
  OrderedSum s(comm, data, n, 0, phase);
  s.start();
  s.finish();
}

namespace {

template <class T>
std::vector<T> allgather_of(const Comm& comm, const std::vector<T>& mine, MPI_Datatype type,
                            const std::string& phase) {
  const int P = comm.size(), r = comm.rank();
  const auto n = static_cast<std::int64_t>(mine.size());
  std::vector<T> all(static_cast<std::size_t>(n * P));
  std::copy(mine.begin(), mine.end(), all.begin() + n * r);
  std::vector<MPI_Request> req;
  std::vector<int> peers;
  for (int q = 0; q < P; ++q) {
    if (q == r) continue;
    req.emplace_back();
    MPI_Irecv(all.data() + n * q, static_cast<int>(n), type, q, kTagAllgather, comm.get(),
              &req.back());
    peers.push_back(q);
    req.emplace_back();
    MPI_Isend(mine.data(), static_cast<int>(n), type, q, kTagAllgather, comm.get(), &req.back());
    peers.push_back(q);
  }
  wait_all(comm, req, peers, phase);
  return all;
}

template <class T>
std::vector<T> sum_rows(const std::vector<T>& all, std::size_t n, int P) {
  std::vector<T> sum(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(n));
  for (int q = 1; q < P; ++q)
    for (std::size_t i = 0; i < n; ++i) sum[i] += all[q * n + i];
  return sum;
}

}  // namespace

std::vector<double> allgather(const Comm& comm, const std::vector<double>& mine,
                              const std::string& phase) {
  return allgather_of(comm, mine, MPI_DOUBLE, phase);
}

std::vector<std::int64_t> allgather(const Comm& comm, const std::vector<std::int64_t>& mine,
                                    const std::string& phase) {
  return allgather_of(comm, mine, MPI_INT64_T, phase);
}

std::vector<double> sum_over_ranks(const Comm& comm, const std::vector<double>& mine,
                                   const std::string& phase) {
  return sum_rows(allgather(comm, mine, phase), mine.size(), comm.size());
}

std::vector<std::int64_t> sum_over_ranks(const Comm& comm, const std::vector<std::int64_t>& mine,
                                         const std::string& phase) {
  return sum_rows(allgather(comm, mine, phase), mine.size(), comm.size());
}

void agree(const Comm& comm, const std::string& own_error, const std::string& phase) {
  const std::vector<std::int64_t> failed =
      allgather(comm, std::vector<std::int64_t>{own_error.empty() ? 0 : 1}, phase);
  if (!own_error.empty()) throw Error(ErrorCode::InvalidArgument, own_error);
  for (int q = 0; q < comm.size(); ++q)
    if (failed[q])
      EPX_THROW(InvalidArgument, phase, ": rank ", comm.world_rank(q),
                " failed (its message is above)");
}

}  // namespace epx::train
