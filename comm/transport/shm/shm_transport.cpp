#include "comm/transport/shm/shm_transport.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <random>
#include <unordered_map>
#include <vector>

#include <epx/group.hpp>

#include "comm/transport/shm/fd_channel.hpp"
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

// Anonymous shared memory has no tmpfs size limit to fail against: a region
// larger than the memory left would be filled until the OOM killer ends some
// process. Refuse it instead (the kernel's estimate, and the cgroup's limit).
std::uint64_t read_number(const char* path, const char* key) {
  std::ifstream in(path);
  std::string word;
  if (!key) return in >> word && word != "max" ? std::stoull(word) : UINT64_MAX;
  while (in >> word)
    if (word == key && in >> word) return std::stoull(word) * 1024;  // /proc/meminfo: kB
  return UINT64_MAX;
}

std::string check_available(std::size_t bytes) {
  std::uint64_t avail = read_number("/proc/meminfo", "MemAvailable:");
  const std::uint64_t limit = read_number("/sys/fs/cgroup/memory.max", nullptr);
  const std::uint64_t used = read_number("/sys/fs/cgroup/memory.current", nullptr);
  if (limit != UINT64_MAX && used != UINT64_MAX)
    avail = std::min(avail, limit > used ? limit - used : 0);
  if (bytes <= avail) return {};
  return core::concat("reserving ", bytes, " bytes: only ", avail,
                      " bytes of memory are available");
}

class ShmTransport final : public Transport {
 public:
  ShmTransport(const TransportContext& context, bool direct)
      : group_(context.group),
        comm_(context.comm),
        direct_(direct),
        channels_(job_key(context), group_.rank(), group_.node_ranks()) {}

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

    // 1. Create and map this rank's memory; agree on success before passing it.
    std::string err;
    UniqueFd fd(memfd_create(core::concat("epx-region-", id).c_str(), MFD_CLOEXEC));
    if (fd.get() < 0) {
      err = core::concat("memfd_create: ", std::strerror(errno));
    } else if (const std::string short_of = check_available(size); !short_of.empty()) {
      err = short_of;
    } else {
      int rc = ftruncate(fd.get(), static_cast<off_t>(size));
      // Reserve the pages now: memory that runs out must fail here, not SIGBUS later.
      if (rc == 0)
        rc = posix_fallocate(fd.get(), 0, static_cast<off_t>(size));
      else
        rc = errno;
      if (rc != 0)
        err = core::concat("reserving ", size, " bytes: ", std::strerror(rc));
      else if (!(region.peers[group_.rank()] = map_object(fd.get(), size)))
        err = core::concat("mmap of ", size, " bytes: ", std::strerror(errno));
    }
    region.sizes[group_.rank()] = size;
    agree(err, id, bytes, deadline);

    // 2. Pass the descriptor to every rank of the node and map theirs. The
    // memory has no name: whoever dies, the kernel frees it with the last
    // descriptor or mapping, so nothing is ever left in /dev/shm.
    std::vector<UniqueFd> fds;
    try {
      fds = channels_.exchange(id, fd.get(), deadline);
    } catch (const std::exception& e) {
      err = e.what();
    }
    const std::vector<int>& node = group_.node_ranks();
    for (std::size_t i = 0; i < fds.size() && err.empty(); ++i) {
      if (node[i] == group_.rank()) continue;
      struct stat st {};
      if (fstat(fds[i].get(), &st) != 0)
        err = core::concat("fstat of rank ", node[i], "'s region: ", std::strerror(errno));
      else if (!(region.peers[node[i]] =
                     map_object(fds[i].get(), static_cast<std::size_t>(st.st_size))))
        err = core::concat("mmap of rank ", node[i], "'s region: ", std::strerror(errno));
      region.sizes[node[i]] = static_cast<std::size_t>(st.st_size);
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

  // One random key per Fabric names its sockets, so concurrent jobs and
  // buffers never meet. (Set-up: every rank is here, the Buffer agreed on it.)
  static std::uint64_t job_key(const TransportContext& context) {
    std::uint64_t key = 0;
    int rank = 0;
    MPI_Comm_rank(context.comm, &rank);
    if (rank == 0)
      key = (std::uint64_t(std::random_device{}()) << 32 | std::random_device{}()) ^ getpid();
    MPI_Bcast(&key, 1, MPI_UINT64_T, 0, context.comm);
    return key;
  }

  // Every rank of the group learns whether any rank failed, and all throw together.
  void agree(const std::string& err, RegionId id, std::size_t bytes,
             const core::Deadline& deadline) {
    const std::string what = core::concat("transport shm: region ", id, " of ", bytes, " bytes");
    core::agree_on_error(
        comm_, err.empty() ? err : core::concat(core::rank_prefix(), " ", what, ": ", err),
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
  FdChannels channels_;
  std::unordered_map<RegionId, Region> regions_;
};

}  // namespace

TransportPtr make_shm_transport(const TransportContext& context, bool direct) {
  return std::make_unique<ShmTransport>(context, direct);
}

}  // namespace epx::comm::transport
