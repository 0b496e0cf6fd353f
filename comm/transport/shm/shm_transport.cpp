#include "comm/transport/shm/shm_transport.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <random>
#include <unordered_map>
#include <vector>

#include <epx/group.hpp>

#include "core/agree.hpp"
#include "core/check.hpp"
#include "core/log.hpp"

namespace epx::comm::transport {
namespace {

// Signals are 64-bit atomics shared between processes: only lock-free ones are.
static_assert(std::atomic_ref<std::uint64_t>::is_always_lock_free);

constexpr std::size_t kPage = 4096;

// One rank's mapping of one shared-memory object.
std::shared_ptr<std::byte> map_object(int fd, std::size_t bytes) {
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) return nullptr;
  return std::shared_ptr<std::byte>(static_cast<std::byte*>(p),
                                    [bytes](std::byte* q) { munmap(q, bytes); });
}

class ShmTransport final : public Transport {
 public:
  ShmTransport(const TransportContext& context, bool direct)
      : group_(context.group), comm_(context.comm), direct_(direct) {
    // One random key per job names its objects, so concurrent jobs never meet.
    // (Set-up: every rank is known to be here, the Buffer agreed on it.)
    std::uint64_t key = 0;
    if (group_.rank() == 0) key = std::random_device{}() ^ (std::uint64_t(getpid()) << 32);
    MPI_Bcast(&key, 1, MPI_UINT64_T, 0, comm_);
    key_ = key;
  }

  const char* name() const noexcept override { return "shm"; }

  TransportCaps caps() const noexcept override {
    TransportCaps c;
    c.has_remote_atomics = true;
    c.is_intra_node = true;
    c.load_store = direct_;
    c.allocates = true;
    return c;
  }

  bool can_reach(int peer) const noexcept override {
    return peer >= 0 && peer < group_.size() && group_.node_of(peer) == group_.node();
  }

  std::shared_ptr<std::byte> create_region(RegionId id, std::size_t bytes,
                                           std::shared_ptr<std::byte> memory,
                                           const core::Deadline& deadline) override {
    EPX_CHECK(memory == nullptr, Unsupported,
              "transport shm: cannot register caller memory; it allocates its regions");
    const std::size_t size = (std::max<std::size_t>(bytes, 1) + kPage - 1) / kPage * kPage;
    Region region;
    region.peers.resize(group_.size());
    region.sizes.resize(group_.size(), 0);

    // 1. Create and map this rank's object; agree on success before peers open it.
    std::string err;
    const std::string own = object_name(id, group_.rank());
    int fd = shm_open(own.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
    if (fd < 0) {
      err = core::concat("shm_open(", own, "): ", std::strerror(errno));
    } else {
      int rc = ftruncate(fd, static_cast<off_t>(size));
      // Reserve the pages now: a full /dev/shm must fail here, not SIGBUS later.
      if (rc == 0) rc = posix_fallocate(fd, 0, static_cast<off_t>(size));
      else rc = errno;
      if (rc != 0) err = core::concat("reserving ", size, " bytes in ", own, ": ", std::strerror(rc));
      else if (!(region.peers[group_.rank()] = map_object(fd, size)))
        err = core::concat("mmap of ", size, " bytes: ", std::strerror(errno));
      close(fd);
    }
    region.sizes[group_.rank()] = size;
    // Whatever happens next, this rank's name goes: after the second agreement
    // every peer has mapped it, and on failure nobody needs it.
    struct Unlink {
      const std::string& name;
      ~Unlink() { shm_unlink(name.c_str()); }
    } unlink_own{own};
    agree(err, id, bytes, deadline);  // also a barrier: every object exists from here on

    // 2. Map every peer of the node, then remove the names (the mappings stay).
    for (int peer : group_.node_ranks()) {
      if (peer == group_.rank()) continue;
      const std::string nm = object_name(id, peer);
      int pfd = shm_open(nm.c_str(), O_RDWR, 0600);
      struct stat st {};
      if (pfd < 0 || fstat(pfd, &st) != 0) {
        if (err.empty()) err = core::concat("shm_open(", nm, ") of rank ", peer, ": ", std::strerror(errno));
      } else if (!(region.peers[peer] = map_object(pfd, static_cast<std::size_t>(st.st_size)))) {
        if (err.empty()) err = core::concat("mmap of rank ", peer, "'s region: ", std::strerror(errno));
      }
      region.sizes[peer] = static_cast<std::size_t>(st.st_size);
      if (pfd >= 0) close(pfd);
    }
    agree(err, id, bytes, deadline);
    std::shared_ptr<std::byte> local = region.peers[group_.rank()];
    regions_[id] = std::move(region);
    EPX_LOG(Debug, Transport, "shm region ", id, ": ", size, " bytes mapped by ",
            group_.node_ranks().size(), " ranks");
    return local;
  }

  void* peer_ptr(int peer, RegionId id, std::size_t offset) override {
    return direct_ ? at(peer, id, offset, 0) : nullptr;
  }

  void put(int peer, const void* src, RegionId id, std::size_t offset, std::size_t bytes) override {
    if (bytes) std::memcpy(at(peer, id, offset, bytes), src, bytes);
  }

  void signal(int peer, RegionId id, std::size_t offset, std::uint64_t value) override {
    auto* word = static_cast<std::uint64_t*>(at(peer, id, offset, sizeof(std::uint64_t)));
    std::atomic_ref<std::uint64_t>(*word).store(value, std::memory_order_release);
  }

  void flush(int) override { std::atomic_thread_fence(std::memory_order_seq_cst); }

 private:
  struct Region {
    std::vector<std::shared_ptr<std::byte>> peers;  // by group rank; null off-node
    std::vector<std::size_t> sizes;
  };

  std::string object_name(RegionId id, int rank) const {
    return core::concat("/epx-", std::hex, key_, std::dec, "-", id, "-", rank);
  }

  // Every rank of the group learns whether any rank failed, and all throw together.
  void agree(const std::string& err, RegionId id, std::size_t bytes, const core::Deadline& deadline) {
    const std::string what = core::concat("transport shm: region ", id, " of ", bytes, " bytes");
    core::agree_on_error(comm_, err.empty() ? err : core::concat(core::rank_prefix(), " ", what, ": ", err),
                         ErrorCode::OutOfMemory, deadline, what.c_str());
  }

  void* at(int peer, RegionId id, std::size_t offset, std::size_t bytes) {
    auto it = regions_.find(id);
    EPX_CHECK(it != regions_.end(), Internal, "transport shm: no region ", id);
    const Region& r = it->second;
    EPX_CHECK(peer >= 0 && peer < group_.size() && r.peers[peer] != nullptr, Internal,
              "transport shm: rank ", peer, " is not on this node");
    EPX_CHECK(offset + bytes <= r.sizes[peer], Internal, "transport shm: access [", offset, ", ",
              offset + bytes, ") past the end of rank ", peer, "'s region ", id, " (",
              r.sizes[peer], " bytes)");
    return r.peers[peer].get() + offset;
  }

  Group& group_;
  MPI_Comm comm_;
  bool direct_;
  std::uint64_t key_ = 0;
  std::unordered_map<RegionId, Region> regions_;
};

}  // namespace

TransportPtr make_shm_transport(const TransportContext& context, bool direct) {
  return std::make_unique<ShmTransport>(context, direct);
}

}  // namespace epx::comm::transport
