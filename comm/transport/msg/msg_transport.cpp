#include "comm/transport/msg/msg_transport.hpp"

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <list>
#include <map>
#include <memory>
#include <vector>

#include <epx/group.hpp>

#include "core/check.hpp"
#include "core/log.hpp"

namespace epx::comm::transport {
namespace {

// MPI counts are int: larger payloads go in pieces (sent and received alike).
constexpr std::size_t kMaxPiece = std::size_t{1} << 30;
constexpr int kHeaderTag = 1;
// How long a closing transport of a healthy group lets its last sends finish.
constexpr double kDrainS = 2.0;
constexpr int kPayloadTag = 2;

enum class Kind : std::uint32_t { Put = 1, Signal = 2 };

struct Header {
  Kind kind;
  std::int32_t region;
  std::uint64_t offset;
  std::uint64_t value;  // Put: bytes; Signal: the value to store
};
static_assert(sizeof(Header) == 24, "a header is three words on every rank");

// What a rank received from one source and has not applied yet, in order.
struct Incoming {
  Header header;
  std::vector<MPI_Request> requests;  // payload pieces (Put)
};

class MsgTransport final : public Transport {
 public:
  explicit MsgTransport(const TransportContext& context) : group_(context.group) {
    // A communicator of its own: its tags meet no other traffic. (Set-up:
    // every rank is here, the Fabric agreed on it.)
    MPI_Comm_dup(context.comm, &comm_);
    incoming_.resize(group_.size());
  }

  ~MsgTransport() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized) return;
    // A healthy group lets the last sends finish (a large one needs both
    // sides in MPI), for a bounded time: the peers are closing too, or
    // waiting in a later call.
    const core::Deadline drain(group_.aborted() ? 0.0 : kDrainS);
    core::Backoff backoff;
    do {
      progress_quietly();
      backoff.pause();
    } while (!sends_.empty() && !drain.expired());
    // Sends still pending go to a peer that stopped receiving: freeing the
    // request lets MPI finish or drop it; its bytes stay allocated (leaked)
    // since MPI may still read them.
    for (Send& s : sends_) {
      MPI_Request_free(&s.request);
      new std::shared_ptr<std::byte[]>(std::move(s.bytes));
    }
    // Receives still posted write into a region: cancel them, and if MPI
    // cannot say they are done, keep the region's memory mapped for good.
    bool receiving = false;
    for (auto& queue : incoming_)
      for (Incoming& in : queue)
        for (MPI_Request& r : in.requests) {
          if (r == MPI_REQUEST_NULL) continue;
          MPI_Cancel(&r);
          int done = 0;
          MPI_Test(&r, &done, MPI_STATUS_IGNORE);
          if (!done) {
            MPI_Request_free(&r);
            receiving = true;
          }
        }
    if (receiving)
      for (auto& [id, region] : regions_) new std::shared_ptr<std::byte>(region.memory);
    MPI_Comm_free(&comm_);
  }

  const char* name() const noexcept override { return "mpi-msg"; }

  TransportCaps caps() const noexcept override {
    TransportCaps c;
    c.max_put_bytes = 0;          // split internally
    c.has_remote_atomics = true;  // a signal is one atomic store at the target
    return c;
  }

  bool can_reach(int peer) const noexcept override { return peer >= 0 && peer < group_.size(); }

  std::shared_ptr<std::byte> create_region(RegionId id, std::size_t bytes,
                                           std::shared_ptr<std::byte> memory,
                                           const core::Deadline& deadline) override {
    if (!memory) {
      void* p = std::aligned_alloc(64, (std::max<std::size_t>(bytes, 1) + 63) / 64 * 64);
      EPX_CHECK(p, OutOfMemory, "transport mpi-msg: cannot allocate ", bytes, " bytes for region ",
                id);
      memory = std::shared_ptr<std::byte>(static_cast<std::byte*>(p),
                                          [](std::byte* q) { std::free(q); });
    }
    // Known locally before any peer can put into it: a peer's puts follow
    // this rank's contribution to the size exchange below.
    Region& r = regions_[id];
    r.memory = memory;
    r.bytes = bytes;
    r.sizes.assign(group_.size(), 0);
    r.own_size = bytes;  // in the region: MPI may read it after a timeout below
    MPI_Request request;
    MPI_Iallgather(&r.own_size, 1, MPI_UNSIGNED_LONG_LONG, r.sizes.data(), 1, MPI_UNSIGNED_LONG_LONG,
                   comm_, &request);
    core::Backoff backoff;
    for (int done = 0;;) {
      MPI_Test(&request, &done, MPI_STATUS_IGNORE);
      if (done) break;
      progress();
      if (deadline.expired()) {
        MPI_Request_free(&request);  // r.sizes stays allocated with the region
        EPX_THROW(Timeout, "transport mpi-msg: region ", id, " of ", bytes,
                  " bytes: the ranks' sizes did not arrive within ", deadline.seconds(), " s");
      }
      backoff.pause();
    }
    return memory;
  }

  void* peer_ptr(int, RegionId, std::size_t) override { return nullptr; }

  void put(int peer, const void* src, RegionId id, std::size_t offset, std::size_t bytes) override {
    check_access(peer, id, offset, bytes);
    if (bytes == 0) return;
    // The copy is what lets put return at once: `src` may change as soon
    // as the caller's next signal or flush returns, and neither waits here.
    std::shared_ptr<std::byte[]> copy(new std::byte[bytes]);
    std::memcpy(copy.get(), src, bytes);
    send_header(peer, Header{Kind::Put, id, offset, bytes});
    for (std::size_t done = 0; done < bytes; done += kMaxPiece) {
      const std::size_t n = std::min(bytes - done, kMaxPiece);
      MPI_Request request;
      MPI_Isend(copy.get() + done, static_cast<int>(n), MPI_BYTE, peer, kPayloadTag, comm_,
                &request);
      sends_.push_back({request, copy});  // each piece holds the copy until MPI is done with it
    }
    test_sends();
  }

  void signal(int peer, RegionId id, std::size_t offset, std::uint64_t value) override {
    check_access(peer, id, offset, sizeof(std::uint64_t));
    send_header(peer, Header{Kind::Signal, id, offset, value});
    test_sends();
  }

  // Puts and signals are complete as far as the caller is concerned when
  // they return (their bytes are copied; the target orders them): flushing
  // only lets MPI move what is pending, without waiting for the peer.
  void flush(int) override { test_sends(); }

  void progress() override {
    test_sends();
    receive_headers();
    apply_arrived();
  }

 private:
  struct Region {
    std::shared_ptr<std::byte> memory;
    std::size_t bytes = 0;
    std::vector<unsigned long long> sizes;  // by rank
    unsigned long long own_size = 0;        // the send buffer of that exchange
  };
  struct Send {
    MPI_Request request;
    std::shared_ptr<std::byte[]> bytes;  // what the request reads
  };

  void check_access(int peer, RegionId id, std::size_t offset, std::size_t bytes) const {
    auto it = regions_.find(id);
    EPX_CHECK(it != regions_.end(), Internal, "transport mpi-msg: no region ", id);
    EPX_CHECK(offset + bytes <= it->second.sizes[peer], Internal, "transport mpi-msg: access [",
              offset, ", ", offset + bytes, ") past the end of rank ", peer, "'s region ", id, " (",
              it->second.sizes[peer], " bytes)");
  }

  void send_header(int peer, const Header& h) {
    std::shared_ptr<std::byte[]> bytes(new std::byte[sizeof h]);
    std::memcpy(bytes.get(), &h, sizeof h);
    MPI_Request request;
    MPI_Isend(bytes.get(), sizeof h, MPI_BYTE, peer, kHeaderTag, comm_, &request);
    sends_.push_back({request, std::move(bytes)});
  }

  // Frees the sends MPI is done with, in any order.
  void test_sends() {
    for (auto it = sends_.begin(); it != sends_.end();) {
      int done = 0;
      MPI_Test(&it->request, &done, MPI_STATUS_IGNORE);
      it = done ? sends_.erase(it) : std::next(it);
    }
  }

  // Takes every header that has arrived, in order per source (MPI does not
  // let messages of one source and tag overtake each other), and posts the
  // receive of its payload straight into the region.
  void receive_headers() {
    while (true) {
      int flag = 0;
      MPI_Message message;
      MPI_Status status;
      MPI_Improbe(MPI_ANY_SOURCE, kHeaderTag, comm_, &flag, &message, &status);
      if (!flag) return;
      Incoming in{};
      MPI_Mrecv(&in.header, sizeof in.header, MPI_BYTE, &message, MPI_STATUS_IGNORE);
      const int src = status.MPI_SOURCE;
      const Header& h = in.header;
      auto it = regions_.find(h.region);
      const std::size_t bytes = h.kind == Kind::Put ? h.value : sizeof(std::uint64_t);
      EPX_CHECK(it != regions_.end() && h.offset + bytes <= it->second.bytes, Internal,
                "transport mpi-msg: rank ", src, " wrote [", h.offset, ", ", h.offset + bytes,
                ") of region ", h.region, ", which ",
                it == regions_.end() ? "does not exist here"
                                     : core::concat("has ", it->second.bytes, " bytes"));
      if (h.kind == Kind::Put) {
        std::byte* dst = it->second.memory.get() + h.offset;
        for (std::size_t done = 0; done < bytes; done += kMaxPiece) {
          const std::size_t n = std::min(bytes - done, kMaxPiece);
          in.requests.emplace_back();
          MPI_Irecv(dst + done, static_cast<int>(n), MPI_BYTE, src, kPayloadTag, comm_,
                    &in.requests.back());
        }
      }
      incoming_[src].push_back(std::move(in));
    }
  }

  // Per source, in order: a put is done when its payload is in; a signal is
  // stored once everything before it is (release: a reader that sees it
  // sees the payload).
  void apply_arrived() {
    for (auto& queue : incoming_) {
      while (!queue.empty()) {
        Incoming& in = queue.front();
        if (!in.requests.empty()) {
          int done = 0;
          MPI_Testall(static_cast<int>(in.requests.size()), in.requests.data(), &done,
                      MPI_STATUSES_IGNORE);
          if (!done) break;
        }
        if (in.header.kind == Kind::Signal) {
          auto* word = reinterpret_cast<std::uint64_t*>(regions_.at(in.header.region).memory.get() +
                                                        in.header.offset);
          std::atomic_ref<std::uint64_t>(*word).store(in.header.value, std::memory_order_release);
        }
        queue.pop_front();
      }
    }
  }

  // Destruction: what has already arrived is still applied, errors ignored.
  void progress_quietly() noexcept {
    try {
      progress();
    } catch (const std::exception& e) {
      EPX_LOG(Warn, Transport, "transport mpi-msg: while closing: ", e.what());
    }
  }

  Group& group_;
  MPI_Comm comm_ = MPI_COMM_NULL;
  std::map<RegionId, Region> regions_;
  std::list<Send> sends_;
  std::vector<std::deque<Incoming>> incoming_;  // by source rank
};

}  // namespace

TransportPtr make_msg_transport(const TransportContext& context) {
  return std::make_unique<MsgTransport>(context);
}

}  // namespace epx::comm::transport
