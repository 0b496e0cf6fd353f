// File descriptors passed between the ranks of one node (SCM_RIGHTS over
// Unix sockets), so that shared memory needs no name: a memfd exists only as
// descriptors and mappings, and the kernel frees it when the last holder
// goes, a rank killed with SIGKILL at any moment included. Named objects in
// /dev/shm stay behind when their creator dies before unlinking them.
//
// The sockets live in the abstract namespace (no file either), named by the
// job's key and the rank; one connection per pair of node ranks, kept for the
// transport's life. Every wait is bounded by a deadline and sleeps in poll().
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/wait.hpp"

namespace epx::comm::transport {

// Owns one file descriptor.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& o) noexcept : fd_(o.release()) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept;
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { reset(); }
  int get() const noexcept { return fd_; }
  int release() noexcept {
    const int fd = fd_;
    fd_ = -1;
    return fd;
  }
  void reset() noexcept;

 private:
  int fd_ = -1;
};

class FdChannels {
 public:
  // `peers`: group ranks of this node, ascending, `self` among them. Starts
  // listening at once (no wait); connections are made by the first exchange.
  FdChannels(std::uint64_t key, int self, std::vector<int> peers);

  // Sends `fd` (with `tag`, the region id) to every other rank of the node and
  // receives theirs for the same tag: result[i] is peers[i]'s descriptor
  // (empty for self). Throws std::runtime_error naming the peer and the cause
  // on a failure or when `deadline` passes.
  std::vector<UniqueFd> exchange(std::int64_t tag, int fd, const core::Deadline& deadline);

 private:
  void connect_all(const core::Deadline& deadline);
  std::string address(int rank) const;

  std::uint64_t key_;
  int self_;
  std::vector<int> peers_;
  UniqueFd listener_;
  std::vector<UniqueFd> links_;  // by index in peers_; empty for self
  bool connected_ = false;
};

}  // namespace epx::comm::transport
