#include "comm/transport/ucx/ucx_transport.hpp"

#include <ucp/api/ucp.h>

#include <poll.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include <epx/group.hpp>

#include "core/agree.hpp"
#include "core/check.hpp"
#include "core/config.hpp"
#include "core/log.hpp"

namespace epx::comm::transport {
namespace {

// How long a closing transport lets its last puts and signals reach their
// targets (the abort marks of a failed group included), at most.
constexpr double kDrainS = 2.0;
// Puts up to this size first try UCX's immediate path (put_short: the
// bytes are copied into the transport's send buffer at once); larger ones,
// and small ones UCX cannot take at once, go through an owned copy.
constexpr std::size_t kImmediateMax = 1024;
// Puts of at least this size let UCX make progress right away (between a
// call's steps), so that data flows before the next wait.
constexpr std::size_t kProgressAfter = 64 * 1024;

std::string status_text(ucs_status_t s) {
  return ucs_status_string(s);
}

// One UCP context per process (ucp_init opens every UCX component; a worker
// per transport keeps Buffers independent). Created on first use, released
// at exit once no worker is left.
class Context {
 public:
  static Context& get() {
    static Context c;
    return c;
  }
  ucp_context_h handle() const noexcept { return handle_; }
  const std::string& error() const noexcept { return error_; }
  void add_worker() noexcept { ++workers_; }
  void remove_worker() noexcept { --workers_; }

 private:
  Context() {
    ucp_config_t* config = nullptr;
    ucs_status_t s = ucp_config_read(nullptr, nullptr, &config);
    if (s != UCS_OK) {
      error_ = core::concat("ucp_config_read: ", status_text(s));
      return;
    }
    ucp_params_t params{};
    params.field_mask = UCP_PARAM_FIELD_FEATURES | UCP_PARAM_FIELD_MT_WORKERS_SHARED;
    // WAKEUP: the progress thread sleeps on the worker's event fd.
    params.features = UCP_FEATURE_RMA | UCP_FEATURE_WAKEUP;
    params.mt_workers_shared = 1;  // each transport's progress thread drives its own worker
    s = ucp_init(&params, config, &handle_);
    ucp_config_release(config);
    if (s != UCS_OK) {
      handle_ = nullptr;
      error_ = core::concat("ucp_init: ", status_text(s));
    }
  }
  ~Context() {
    if (handle_ && workers_.load() == 0) ucp_cleanup(handle_);
  }
  ucp_context_h handle_ = nullptr;
  std::string error_;
  std::atomic<int> workers_{0};
};

// Polls an MPI request with back-off until it completes or `deadline`
// passes (then it is freed and Timeout names `what`).
void wait_request(MPI_Request& request, const core::Deadline& deadline, const std::string& what) {
  core::Backoff backoff;
  for (int done = 0;;) {
    MPI_Test(&request, &done, MPI_STATUS_IGNORE);
    if (done) return;
    if (deadline.expired()) {
      MPI_Request_free(&request);
      EPX_THROW(Timeout, "transport ucx: ", what, ": the other ranks did not come within ",
                deadline.seconds(), " s");
    }
    backoff.pause();
  }
}

// Collective: every rank's `bytes`, by rank. On timeout the buffers leak
// with the freed requests (MPI may still write into them).
std::vector<std::vector<std::byte>> allgather_bytes(MPI_Comm comm, const void* data,
                                                    std::size_t bytes,
                                                    const core::Deadline& deadline,
                                                    const std::string& what) {
  int size = 0;
  MPI_Comm_size(comm, &size);
  // The last entry is this rank's send buffer, kept with the result.
  auto sizes = std::make_shared<std::vector<unsigned long long>>(size + 1);
  sizes->back() = bytes;
  MPI_Request request;
  MPI_Iallgather(&sizes->back(), 1, MPI_UNSIGNED_LONG_LONG, sizes->data(), 1,
                 MPI_UNSIGNED_LONG_LONG, comm, &request);
  try {
    wait_request(request, deadline, what);
  } catch (...) {
    new std::shared_ptr<std::vector<unsigned long long>>(sizes);  // MPI may still write it
    throw;
  }
  std::vector<int> counts(size), displs(size);
  std::size_t total = 0;
  for (int r = 0; r < size; ++r) {
    EPX_CHECK((*sizes)[r] < (1ull << 30), Internal, "transport ucx: ", what, ": rank ", r,
              " sends ", (*sizes)[r], " bytes");
    counts[r] = static_cast<int>((*sizes)[r]);
    displs[r] = static_cast<int>(total);
    total += (*sizes)[r];
    EPX_CHECK(total < (1ull << 31), Internal, "transport ucx: ", what, ": ", total,
              " bytes in all");
  }
  auto all = std::make_shared<std::vector<std::byte>>(std::max<std::size_t>(total, 1));
  // A copy of this rank's bytes: the caller's may be gone when MPI reads them.
  const auto* first = static_cast<const std::byte*>(data);
  auto own = std::make_shared<std::vector<std::byte>>(first, first + bytes);
  MPI_Iallgatherv(own->data(), static_cast<int>(bytes), MPI_BYTE, all->data(), counts.data(),
                  displs.data(), MPI_BYTE, comm, &request);
  try {
    wait_request(request, deadline, what);
  } catch (...) {
    new std::shared_ptr<std::vector<std::byte>>(all);
    new std::shared_ptr<std::vector<std::byte>>(own);
    throw;
  }
  std::vector<std::vector<std::byte>> out(size);
  for (int r = 0; r < size; ++r)
    out[r].assign(all->begin() + displs[r], all->begin() + displs[r] + counts[r]);
  return out;
}

// A UCX request of ours: null when the operation completed at once.
// Returns its status (UCS_INPROGRESS while it runs) and frees it when done.
ucs_status_t poll(void*& request) {
  if (request == nullptr) return UCS_OK;
  const ucs_status_t s = ucp_request_check_status(request);
  if (s != UCS_INPROGRESS) {
    ucp_request_free(request);
    request = nullptr;
  }
  return s;
}

class UcxTransport final : public Transport {
 public:
  explicit UcxTransport(const TransportContext& context)
      : group_(context.group), comm_(context.comm) {
    const core::Deadline deadline(context.timeout_s);
    const int me = group_.rank();
    Context& ucx = Context::get();
    std::string err = ucx.error();
    if (err.empty()) {
      ucp_worker_params_t wp{};
      wp.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
      // The rank's thread and the progress thread take turns (mu_).
      wp.thread_mode = UCS_THREAD_MODE_SERIALIZED;
      const ucs_status_t s = ucp_worker_create(ucx.handle(), &wp, &worker_);
      if (s != UCS_OK) {
        worker_ = nullptr;
        err = core::concat("ucp_worker_create: ", status_text(s));
      } else {
        ucx.add_worker();
      }
    }
    ucp_address_t* address = nullptr;
    std::size_t address_bytes = 0;
    if (err.empty()) {
      const ucs_status_t s = ucp_worker_get_address(worker_, &address, &address_bytes);
      if (s != UCS_OK) err = core::concat("ucp_worker_get_address: ", status_text(s));
    }
    if (!err.empty()) err = core::concat(core::rank_prefix(), " transport ucx: ", err);
    try {
      core::agree_on_error(comm_, err, ErrorCode::Unsupported, deadline,
                           "transport ucx: starting UCX");
      auto addresses =
          allgather_bytes(comm_, address, address_bytes, deadline, "exchanging worker addresses");
      ucp_worker_release_address(worker_, address);
      address = nullptr;
      peers_.resize(group_.size());
      for (int r = 0; r < group_.size(); ++r) {
        Peer& p = peers_[r];
        p.self = this;
        p.rank = r;
        if (r == me || group_.node_of(r) == group_.node()) continue;
        ucp_ep_params_t ep{};
        ep.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE |
                        UCP_EP_PARAM_FIELD_ERR_HANDLER;
        ep.address = reinterpret_cast<const ucp_address_t*>(addresses[r].data());
        ep.err_mode = UCP_ERR_HANDLING_MODE_PEER;  // a peer gone fails its operations, not the job
        ep.err_handler.cb = &UcxTransport::on_error;
        ep.err_handler.arg = &p;
        const ucs_status_t s = ucp_ep_create(worker_, &ep, &p.ep);
        if (s != UCS_OK) {
          p.ep = nullptr;
          if (err.empty())
            err = core::concat(core::rank_prefix(), " transport ucx: ucp_ep_create to rank ", r,
                               " (node ", group_.node_of(r), "): ", status_text(s));
        }
      }
      core::agree_on_error(comm_, err, ErrorCode::Unsupported, deadline,
                           "transport ucx: connecting the ranks");
    } catch (...) {
      if (address) ucp_worker_release_address(worker_, address);
      close();
      throw;
    }
    fence_ = core::params::ucx_signal.get() == "fence";
    if (core::params::ucx_progress.get() == "thread") {
      if (ucp_worker_get_efd(worker_, &efd_) != UCS_OK) efd_ = -1;
      thread_ = std::thread([this] { serve(); });
    }
  }

  ~UcxTransport() override {
    // Bounded: what a healthy group still sends (signals nobody waits for,
    // a failing rank's abort marks) gets out; a peer that stopped receiving
    // cannot hold this rank for longer.
    const core::Deadline drain(kDrainS);
    core::Backoff backoff;
    stop_thread();
    try {
      while (busy() && !drain.expired()) {
        progress();
        backoff.pause();
      }
      ucp_request_param_t param{};
      void* flush = worker_ ? ucp_worker_flush_nbx(worker_, &param) : nullptr;
      if (UCS_PTR_IS_ERR(flush)) flush = nullptr;
      while (flush && poll(flush) == UCS_INPROGRESS && !drain.expired()) {
        ucp_worker_progress(worker_);
        backoff.pause();
      }
      if (flush) {
        ucp_request_cancel(worker_, flush);
        ucp_request_free(flush);
      }
    } catch (const std::exception& e) {
      EPX_LOG(Warn, Transport, "transport ucx: while closing: ", e.what());
    }
    close();
  }

  const char* name() const noexcept override { return "ucx"; }

  TransportCaps caps() const noexcept override {
    TransportCaps c;
    c.max_put_bytes = 0;
    c.has_remote_atomics = true;  // a signal is one 8-byte store at the target
    return c;
  }

  bool can_reach(int peer) const noexcept override {
    return peer >= 0 && peer < static_cast<int>(peers_.size()) && peers_[peer].ep != nullptr;
  }

  std::shared_ptr<std::byte> create_region(RegionId id, std::size_t bytes,
                                           std::shared_ptr<std::byte> memory,
                                           const core::Deadline& deadline) override {
    if (!memory) {
      void* p = std::aligned_alloc(64, (std::max<std::size_t>(bytes, 1) + 63) / 64 * 64);
      EPX_CHECK(p, OutOfMemory, "transport ucx: cannot allocate ", bytes, " bytes for region ", id);
      memory = std::shared_ptr<std::byte>(static_cast<std::byte*>(p),
                                          [](std::byte* q) { std::free(q); });
    }
    Region r;
    r.memory = memory;
    r.bytes = bytes;
    // What peers need: base address, size, packed rkey (none for 0 bytes).
    std::vector<std::byte> blob(2 * sizeof(std::uint64_t));
    const std::uint64_t head[2] = {reinterpret_cast<std::uint64_t>(memory.get()), bytes};
    std::memcpy(blob.data(), head, sizeof head);
    std::string err;
    std::unique_lock<std::mutex> lock(mu_);
    if (bytes > 0) {
      ucp_mem_map_params_t mp{};
      mp.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH;
      mp.address = memory.get();
      mp.length = bytes;
      ucs_status_t s = ucp_mem_map(Context::get().handle(), &mp, &r.memh);
      if (s != UCS_OK) {
        r.memh = nullptr;
        err = core::concat("ucp_mem_map of ", bytes, " bytes: ", status_text(s));
      } else {
        void* packed = nullptr;
        std::size_t packed_bytes = 0;
        s = ucp_rkey_pack(Context::get().handle(), r.memh, &packed, &packed_bytes);
        if (s != UCS_OK) {
          err = core::concat("ucp_rkey_pack: ", status_text(s));
        } else {
          const auto* b = static_cast<const std::byte*>(packed);
          blob.insert(blob.end(), b, b + packed_bytes);
          ucp_rkey_buffer_release(packed);
        }
      }
    }
    lock.unlock();  // the exchange below waits for the other ranks
    if (!err.empty())
      err = core::concat(core::rank_prefix(), " transport ucx: region ", id, ": ", err);
    const auto unmap = [&] {
      if (r.memh) ucp_mem_unmap(Context::get().handle(), r.memh);
    };
    try {
      core::agree_on_error(comm_, err, ErrorCode::Unsupported, deadline,
                           "transport ucx: registering a region");
      auto blobs = allgather_bytes(comm_, blob.data(), blob.size(), deadline,
                                   core::concat("exchanging the keys of region ", id));
      lock.lock();
      r.remote.resize(group_.size());
      for (int p = 0; p < group_.size(); ++p) {
        if (!peers_[p].ep) continue;
        RemoteRegion& rr = r.remote[p];
        std::uint64_t h[2];
        EPX_CHECK(blobs[p].size() >= sizeof h, Internal, "transport ucx: rank ", p,
                  " sent a key of ", blobs[p].size(), " bytes for region ", id);
        std::memcpy(h, blobs[p].data(), sizeof h);
        rr.base = h[0];
        rr.bytes = h[1];
        if (rr.bytes == 0) continue;
        const ucs_status_t s =
            ucp_ep_rkey_unpack(peers_[p].ep, blobs[p].data() + sizeof h, &rr.rkey);
        if (s != UCS_OK) {
          rr.rkey = nullptr;
          if (err.empty())
            err = core::concat(core::rank_prefix(), " transport ucx: region ", id,
                               ": ucp_ep_rkey_unpack of rank ", p, "'s key: ", status_text(s));
        }
      }
      lock.unlock();
      core::agree_on_error(comm_, err, ErrorCode::Unsupported, deadline,
                           "transport ucx: unpacking the keys of a region");
    } catch (...) {
      if (!lock.owns_lock()) lock.lock();
      for (RemoteRegion& rr : r.remote)
        if (rr.rkey) ucp_rkey_destroy(rr.rkey);
      unmap();
      throw;
    }
    lock.lock();
    regions_.emplace(id, std::move(r));
    return memory;
  }

  void* peer_ptr(int, RegionId, std::size_t) override { return nullptr; }

  void put(int peer, const void* src, RegionId id, std::size_t offset, std::size_t bytes) override {
    std::lock_guard<std::mutex> lock(mu_);
    const RemoteRegion& rr = remote(peer, id, offset, bytes);
    if (bytes == 0) return;
    Peer& p = live(peer, "put");
    const std::uint64_t addr = rr.base + offset;
    ucp_request_param_t param{};
    p.dirty = true;
    if (bytes <= kImmediateMax) {
      param.op_attr_mask = UCP_OP_ATTR_FLAG_FORCE_IMM_CMPL;
      ucs_status_ptr_t r = ucp_put_nbx(p.ep, src, bytes, addr, rr.rkey, &param);
      if (r == nullptr) return;
      const ucs_status_t s = UCS_PTR_STATUS(r);
      if (s != UCS_ERR_NO_RESOURCE) fail(p, s, "put");
      param.op_attr_mask = 0;
    }
    // UCX may read `src` after this returns: it reads an owned copy instead.
    std::unique_ptr<std::byte[]> copy(new std::byte[bytes]);
    std::memcpy(copy.get(), src, bytes);
    ucs_status_ptr_t r = ucp_put_nbx(p.ep, copy.get(), bytes, addr, rr.rkey, &param);
    if (UCS_PTR_IS_ERR(r)) fail(p, UCS_PTR_STATUS(r), "put");
    if (r != nullptr) copies_.push_back({r, std::move(copy)});
    if (bytes >= kProgressAfter) progress_locked();
  }

  void signal(int peer, RegionId id, std::size_t offset, std::uint64_t value) override {
    std::lock_guard<std::mutex> lock(mu_);
    remote(peer, id, offset, sizeof(std::uint64_t));
    Peer& p = live(peer, "signal");
    Signal& s = p.signals.emplace_back();
    s.region = id;
    s.offset = offset;
    s.value = value;
    if (p.dirty && fence_) {
      // UCX completes the operations before a fence before any after it:
      // the store can go at once, behind the puts (no round trip).
      const ucs_status_t st = ucp_worker_fence(worker_);
      if (st != UCS_OK) {
        p.signals.pop_back();
        fail(p, st, "fence before a signal");
      }
      p.dirty = false;
    } else if (p.dirty) {
      // Stored only once the puts before it are complete at the target.
      ucp_request_param_t param{};
      ucs_status_ptr_t r = ucp_ep_flush_nbx(p.ep, &param);
      if (UCS_PTR_IS_ERR(r)) {
        p.signals.pop_back();
        fail(p, UCS_PTR_STATUS(r), "flush before a signal");
      }
      s.flush = r;
      p.dirty = false;
    }
    progress_locked();
  }

  // Puts and signals need nothing from the caller once they return (their
  // bytes are copied; signals are stored in order): flushing only lets UCX
  // move what is pending, without waiting for the peer.
  void flush(int) override { progress(); }

  void progress() override {
    std::lock_guard<std::mutex> lock(mu_);
    progress_locked();
  }

 private:
  void progress_locked() {
    if (!worker_) return;
    for (int i = 0; i < 8 && ucp_worker_progress(worker_) != 0; ++i) {
    }
    for (auto it = copies_.begin(); it != copies_.end();) {
      const ucs_status_t s = poll(it->request);
      it = s == UCS_INPROGRESS ? std::next(it) : copies_.erase(it);
    }
    for (Peer& p : peers_) advance(p);
  }

  // The progress thread: serves incoming puts (on tcp the target's CPU
  // copies them into place) and pushes this rank's pending puts and signals
  // while the rank computes or sits in other calls. It sleeps on the
  // worker's event fd (or 1 ms) when idle, and yields to the rank's thread
  // while work is pending.
  void serve() {
    while (!stop_.load(std::memory_order_acquire)) {
      bool pending;
      bool armed = false;
      {
        std::lock_guard<std::mutex> lock(mu_);
        progress_locked();
        pending = busy();
        if (efd_ >= 0) armed = ucp_worker_arm(worker_) == UCS_OK;
      }
      // Sleep on the event fd (an incoming put, a socket that takes more),
      // briefly while this rank's puts are pending, 1 ms when idle.
      // Spinning here would take the core from the ranks (they outnumber it).
      timespec ts{0, (pending ? 100 : 1000) * 1000};
      if (armed) {
        pollfd fd{efd_, POLLIN, 0};
        ::ppoll(&fd, 1, &ts, nullptr);
      } else if (efd_ >= 0) {
        sched_yield();  // events to process first (arm said busy)
      } else {
        nanosleep(&ts, nullptr);
      }
    }
  }

  void stop_thread() noexcept {
    if (!thread_.joinable()) return;
    stop_.store(true, std::memory_order_release);
    ucp_worker_signal(worker_);
    thread_.join();
  }

  struct RemoteRegion {
    std::uint64_t base = 0;
    std::uint64_t bytes = 0;
    ucp_rkey_h rkey = nullptr;
  };
  struct Region {
    std::shared_ptr<std::byte> memory;
    std::size_t bytes = 0;
    ucp_mem_h memh = nullptr;
    std::vector<RemoteRegion> remote;  // by rank (ranks with an endpoint)
  };
  // A signal on its way: the flush of the puts before it, then the store.
  struct Signal {
    void* flush = nullptr;
    void* store = nullptr;
    bool issued = false;
    RegionId region = 0;
    std::size_t offset = 0;
    std::uint64_t value = 0;  // the store's source: a deque keeps it in place
  };
  struct Peer {
    UcxTransport* self = nullptr;
    int rank = -1;
    ucp_ep_h ep = nullptr;
    ucs_status_t failed = UCS_OK;
    bool dirty = false;          // puts since the last flush began
    std::deque<Signal> signals;  // in issue order
  };
  struct Copy {
    void* request;
    std::unique_ptr<std::byte[]> bytes;  // what the request reads
  };

  // Called by UCX (from inside ucp_worker_progress) or by advance().
  static void on_error(void* arg, ucp_ep_h, ucs_status_t status) noexcept {
    auto* p = static_cast<Peer*>(arg);
    if (p->failed != UCS_OK) return;
    p->failed = status;
    // Info, not Warn: a peer that closed its Buffer first ends the same way;
    // a put or signal to a failed peer raises PeerFailure naming it.
    try {
      EPX_LOG(Info, Transport, "transport ucx: the connection to rank ", p->rank, " (node ",
              p->self->group_.node_of(p->rank), ") failed: ", status_text(status));
    } catch (...) {
    }
  }

  const RemoteRegion& remote(int peer, RegionId id, std::size_t offset, std::size_t bytes) const {
    auto it = regions_.find(id);
    EPX_CHECK(it != regions_.end(), Internal, "transport ucx: no region ", id);
    EPX_CHECK(can_reach(peer), Internal, "transport ucx: rank ", peer, " is not reached by ucx");
    const RemoteRegion& rr = it->second.remote[peer];
    EPX_CHECK(offset + bytes <= rr.bytes, Internal, "transport ucx: access [", offset, ", ",
              offset + bytes, ") past the end of rank ", peer, "'s region ", id, " (", rr.bytes,
              " bytes)");
    return rr;
  }

  Peer& live(int peer, const char* what) {
    Peer& p = peers_[peer];
    if (p.failed != UCS_OK)
      EPX_THROW(PeerFailure, "transport ucx: ", what, " to rank ", peer, " (node ",
                group_.node_of(peer), "): its connection failed earlier: ", status_text(p.failed));
    return p;
  }

  [[noreturn]] void fail(Peer& p, ucs_status_t s, const char* what) {
    if (p.failed == UCS_OK) p.failed = s;
    EPX_THROW(PeerFailure, "transport ucx: ", what, " to rank ", p.rank, " (node ",
              group_.node_of(p.rank), ") failed: ", status_text(s));
  }

  // Moves the peer's signals on, in order: a store is issued once its flush
  // is complete and every store before it is.
  void advance(Peer& p) {
    while (!p.signals.empty()) {
      Signal& s = p.signals.front();
      if (p.failed != UCS_OK) {
        drop(s);
        p.signals.pop_front();
        continue;
      }
      ucs_status_t st = poll(s.flush);
      if (st == UCS_INPROGRESS) return;
      if (st != UCS_OK) {
        on_error(&p, nullptr, st);
        continue;
      }
      if (!s.issued) {
        const RemoteRegion& rr = regions_.at(s.region).remote[p.rank];
        ucp_request_param_t param{};
        ucs_status_ptr_t r =
            ucp_put_nbx(p.ep, &s.value, sizeof s.value, rr.base + s.offset, rr.rkey, &param);
        s.issued = true;
        if (UCS_PTR_IS_ERR(r)) {
          on_error(&p, nullptr, UCS_PTR_STATUS(r));
          continue;
        }
        s.store = r;
      }
      st = poll(s.store);
      if (st == UCS_INPROGRESS) return;
      if (st != UCS_OK) on_error(&p, nullptr, st);
      p.signals.pop_front();
    }
  }

  void drop(Signal& s) {
    for (void** r : {&s.flush, &s.store})
      if (*r) {
        ucp_request_cancel(worker_, *r);
        ucp_request_free(*r);
        *r = nullptr;
      }
  }

  bool busy() const {
    if (!copies_.empty()) return true;
    for (const Peer& p : peers_)
      if (!p.signals.empty() && p.failed == UCS_OK) return true;
    return false;
  }

  // Releases everything in reverse order of creation; no peer is waited for.
  void close() noexcept {
    for (Peer& p : peers_)
      for (Signal& s : p.signals) drop(s);
    for (auto& [id, r] : regions_)
      for (RemoteRegion& rr : r.remote)
        if (rr.rkey) ucp_rkey_destroy(rr.rkey);
    std::vector<void*> closing;
    for (Peer& p : peers_) {
      if (!p.ep) continue;
      ucp_request_param_t param{};
      param.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
      param.flags = UCP_EP_CLOSE_FLAG_FORCE;
      ucs_status_ptr_t r = ucp_ep_close_nbx(p.ep, &param);
      if (r && !UCS_PTR_IS_ERR(r)) closing.push_back(r);
      p.ep = nullptr;
    }
    const core::Deadline bound(1.0);
    core::Backoff backoff;
    for (void*& r : closing) {
      while (poll(r) == UCS_INPROGRESS && !bound.expired()) {
        ucp_worker_progress(worker_);
        backoff.pause();
      }
      if (r) ucp_request_free(r);
    }
    for (Copy& c : copies_) ucp_request_free(c.request);
    if (worker_) {
      ucp_worker_destroy(worker_);  // no progress any more: nothing writes the regions now
      worker_ = nullptr;
      Context::get().remove_worker();
    }
    copies_.clear();
    for (auto& [id, r] : regions_)
      if (r.memh) ucp_mem_unmap(Context::get().handle(), r.memh);
    regions_.clear();
  }

  Group& group_;
  MPI_Comm comm_;
  std::mutex mu_;  // every UCX call (the worker is SERIALIZED) and the state below
  std::thread thread_;
  std::atomic<bool> stop_{false};
  int efd_ = -1;
  bool fence_ = false;  // EPX_UCX_SIGNAL: a fence (true) or a flush before each signal's store
  ucp_worker_h worker_ = nullptr;
  std::vector<Peer> peers_;  // by rank; endpoints to the ranks of other nodes
  std::map<RegionId, Region> regions_;
  std::list<Copy> copies_;
};

}  // namespace

TransportPtr make_ucx_transport(const TransportContext& context) {
  return std::make_unique<UcxTransport>(context);
}

const char* ucx_version() {
  return ucp_get_version_string();
}

}  // namespace epx::comm::transport
