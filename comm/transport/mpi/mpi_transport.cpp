#include "comm/transport/mpi/mpi_transport.hpp"

#include <cstdlib>
#include <limits>
#include <map>
#include <set>
#include <vector>

#include <epx/group.hpp>

#include "core/check.hpp"
#include "core/log.hpp"

namespace epx::comm::transport {
namespace {

// MPI counts are int: larger puts go in pieces.
constexpr std::size_t kMaxPiece = std::size_t{1} << 30;

class MpiTransport final : public Transport {
 public:
  explicit MpiTransport(const TransportContext& context)
      : group_(context.group), comm_(context.comm) {}

  ~MpiTransport() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized) return;
    // MPI_Win_free is collective: after a failure a peer may never join it,
    // so a failed group (or a Fabric whose ranks did not all agree to free)
    // leaks its windows rather than hang here.
    const bool failed = group_.aborted() || abandoned_;
    for (auto& [id, w] : windows_) {
      MPI_Win_unlock_all(w.win);
      if (!failed) {
        MPI_Win_free(&w.win);
      } else {
        // A leaked window stays exposed: peers' puts in flight (or issued
        // later, by ranks that have not noticed the failure) still land in
        // its memory whenever MPI makes progress here. So the memory is
        // leaked with it; unmapping it would turn those puts into a SIGSEGV
        // inside MPI.
        new std::shared_ptr<std::byte>(w.memory);
      }
    }
  }

  const char* name() const noexcept override { return "mpi"; }

  TransportCaps caps() const noexcept override {
    TransportCaps c;
    c.max_put_bytes = 0;  // split internally
    c.has_remote_atomics = true;
    return c;
  }

  bool can_reach(int peer) const noexcept override { return peer >= 0 && peer < group_.size(); }

  std::shared_ptr<std::byte> create_region(RegionId id, std::size_t bytes,
                                           std::shared_ptr<std::byte> memory,
                                           const core::Deadline&) override {
    if (!memory) {
      void* p = std::aligned_alloc(64, (std::max<std::size_t>(bytes, 1) + 63) / 64 * 64);
      EPX_CHECK(p, OutOfMemory, "transport mpi: cannot allocate ", bytes, " bytes for region ", id);
      memory = std::shared_ptr<std::byte>(static_cast<std::byte*>(p),
                                          [](std::byte* q) { std::free(q); });
    }
    Window w;
    w.memory = memory;
    w.sizes.resize(group_.size());
    // Every rank is here (the caller agreed on the creation first): plain
    // collectives are safe.
    unsigned long long mine = bytes;
    MPI_Allgather(&mine, 1, MPI_UNSIGNED_LONG_LONG, w.sizes.data(), 1, MPI_UNSIGNED_LONG_LONG,
                  comm_);
    MPI_Info info;
    MPI_Info_create(&info);
    MPI_Info_set(info, "accumulate_ops", "same_op");  // only REPLACE: lets MPI use hardware atomics
    const int rc =
        MPI_Win_create(memory.get(), static_cast<MPI_Aint>(bytes), 1, info, comm_, &w.win);
    MPI_Info_free(&info);
    if (rc != MPI_SUCCESS) {
      char text[MPI_MAX_ERROR_STRING] = {0};
      int len = 0;
      MPI_Error_string(rc, text, &len);
      EPX_THROW(Unsupported, "transport mpi: MPI_Win_create of ", bytes, " bytes for region ", id,
                " failed: ", text,
                ". No one-sided (osc) component of this MPI works here; with Open MPI "
                "set OMPI_MCA_osc=pt2pt (or mpirun --mca osc pt2pt): Debian's "
                "/etc/openmpi/openmpi-mca-params.conf disables it and osc/ucx, and osc/rdma "
                "needs RDMA hardware (docs/internode.md)");
    }
    MPI_Win_lock_all(MPI_MODE_NOCHECK, w.win);
    windows_.emplace(id, std::move(w));
    return memory;
  }

  void* peer_ptr(int, RegionId, std::size_t) override { return nullptr; }

  void put(int peer, const void* src, RegionId id, std::size_t offset, std::size_t bytes) override {
    Window& w = window(id, peer, offset, bytes);
    const auto* p = static_cast<const std::byte*>(src);
    for (std::size_t done = 0; done < bytes;) {
      const std::size_t n = std::min(bytes - done, kMaxPiece);
      MPI_Put(p + done, static_cast<int>(n), MPI_BYTE, peer, static_cast<MPI_Aint>(offset + done),
              static_cast<int>(n), MPI_BYTE, w.win);
      done += n;
    }
    if (bytes) dirty_[peer].insert(id);
  }

  void signal(int peer, RegionId id, std::size_t offset, std::uint64_t value) override {
    flush(peer);  // the puts before it are complete at the target first
    Window& w = window(id, peer, offset, sizeof(std::uint64_t));
    MPI_Accumulate(&value, 1, MPI_UINT64_T, peer, static_cast<MPI_Aint>(offset), 1, MPI_UINT64_T,
                   MPI_REPLACE, w.win);
    MPI_Win_flush(peer, w.win);  // `value` lives on this stack frame
  }

  void flush(int peer) override {
    if (peer < 0) {
      for (auto& [p, ids] : dirty_)
        for (RegionId id : ids) MPI_Win_flush(p, windows_.at(id).win);
      dirty_.clear();
      return;
    }
    auto it = dirty_.find(peer);
    if (it == dirty_.end()) return;
    for (RegionId id : it->second) MPI_Win_flush(peer, windows_.at(id).win);
    dirty_.erase(it);
  }

  bool collective_free() const noexcept override { return !windows_.empty(); }
  void abandon() noexcept override { abandoned_ = true; }

  // Waiters read their own memory: sync the window copies and let MPI make
  // progress on incoming operations (some osc components need the target).
  void progress() override {
    for (auto& [id, w] : windows_) MPI_Win_sync(w.win);
    int flag = 0;
    MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, comm_, &flag, MPI_STATUS_IGNORE);
  }

 private:
  struct Window {
    MPI_Win win = MPI_WIN_NULL;
    std::shared_ptr<std::byte> memory;
    std::vector<unsigned long long> sizes;  // by rank
  };

  Window& window(RegionId id, int peer, std::size_t offset, std::size_t bytes) {
    auto it = windows_.find(id);
    EPX_CHECK(it != windows_.end(), Internal, "transport mpi: no region ", id);
    EPX_CHECK(offset + bytes <= it->second.sizes[peer], Internal, "transport mpi: access [", offset,
              ", ", offset + bytes, ") past the end of rank ", peer, "'s region ", id, " (",
              it->second.sizes[peer], " bytes)");
    return it->second;
  }

  Group& group_;
  MPI_Comm comm_;
  std::map<RegionId, Window> windows_;
  std::map<int, std::set<RegionId>> dirty_;  // peers with puts not yet flushed, per window
  bool abandoned_ = false;
};

}  // namespace

TransportPtr make_mpi_transport(const TransportContext& context) {
  return std::make_unique<MpiTransport>(context);
}

}  // namespace epx::comm::transport
