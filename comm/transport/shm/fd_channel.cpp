#include "comm/transport/shm/fd_channel.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <stdexcept>

#include "core/check.hpp"

namespace epx::comm::transport {

UniqueFd& UniqueFd::operator=(UniqueFd&& o) noexcept {
  if (this != &o) {
    reset();
    fd_ = o.release();
  }
  return *this;
}

void UniqueFd::reset() noexcept {
  if (fd_ >= 0) close(fd_);
  fd_ = -1;
}

namespace {

// The first message on a connection: who connected.
struct Hello {
  std::int64_t rank;
};
// One per exchange and direction, with the descriptor attached.
struct FdMessage {
  std::int64_t tag;
};

// A message header for one FdMessage and room for one descriptor. Not
// copyable: `h` points into the object itself.
struct FdPacket {
  FdMessage m{};
  iovec io{&m, sizeof m};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr h{};
  FdPacket() {
    h.msg_iov = &io;
    h.msg_iovlen = 1;
    h.msg_control = control;
    h.msg_controllen = sizeof control;
  }
  FdPacket(const FdPacket&) = delete;
  FdPacket& operator=(const FdPacket&) = delete;
};

[[noreturn]] void fail(const std::string& text) {
  throw std::runtime_error(text);
}

std::string errno_text() {
  return std::strerror(errno);
}

// Waits up to a few milliseconds for `events` on `fd`: a sleep, not a spin,
// since ranks may outnumber cores. Throws once `deadline` has passed.
void wait_for(int fd, short events, const core::Deadline& deadline, const std::string& what) {
  pollfd p{fd, events, 0};
  while (true) {
    const int rc = poll(&p, 1, 5);
    if (rc > 0) return;
    if (rc < 0 && errno != EINTR) fail(what + ": poll: " + errno_text());
    if (deadline.expired())
      fail(what + ": timed out after " + std::to_string(deadline.seconds()) + " s");
  }
}

sockaddr_un make_address(const std::string& name, socklen_t& len) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  // Abstract namespace: a leading NUL, then the name; no file is created.
  std::memcpy(a.sun_path + 1, name.data(), std::min(name.size(), sizeof(a.sun_path) - 2));
  len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
  return a;
}

UniqueFd new_socket() {
  return UniqueFd(socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
}

}  // namespace

FdChannels::FdChannels(std::uint64_t key, int self, std::vector<int> peers)
    : key_(key), self_(self), peers_(std::move(peers)), links_(peers_.size()) {
  if (peers_.size() <= 1) return;
  listener_ = new_socket();
  socklen_t len = 0;
  const sockaddr_un a = make_address(address(self_), len);
  // A failure here surfaces at the first exchange, inside an agreement.
  if (listener_.get() < 0 ||
      bind(listener_.get(), reinterpret_cast<const sockaddr*>(&a), len) != 0 ||
      listen(listener_.get(), static_cast<int>(peers_.size())) != 0)
    listener_.reset();
}

std::string FdChannels::address(int rank) const {
  return core::concat("epx-", std::hex, key_, std::dec, "-", rank);
}

void FdChannels::connect_all(const core::Deadline& deadline) {
  const auto me = std::find(peers_.begin(), peers_.end(), self_) - peers_.begin();
  if (listener_.get() < 0)
    fail(core::concat("cannot listen on a Unix socket (abstract address ", address(self_),
                      "): ", errno_text()));
  // Connect to every lower rank of the node: the connection completes in the
  // listener's backlog, without that rank's help, so no order can deadlock.
  for (std::size_t i = 0; i < static_cast<std::size_t>(me); ++i) {
    const std::string what = core::concat("connecting to rank ", peers_[i]);
    socklen_t len = 0;
    const sockaddr_un a = make_address(address(peers_[i]), len);
    UniqueFd s;
    core::Backoff backoff;
    while (true) {
      s = new_socket();
      if (s.get() < 0) fail(what + ": socket: " + errno_text());
      if (connect(s.get(), reinterpret_cast<const sockaddr*>(&a), len) == 0) break;
      // Not listening yet (ECONNREFUSED) or its backlog is full (EAGAIN): again.
      if (errno != ECONNREFUSED && errno != EAGAIN && errno != ENOENT)
        fail(what + ": " + errno_text());
      if (deadline.expired())
        fail(what + ": timed out after " + std::to_string(deadline.seconds()) + " s");
      backoff.pause();
    }
    const Hello hello{self_};
    if (send(s.get(), &hello, sizeof hello, MSG_NOSIGNAL) != sizeof hello)
      fail(what + ": send: " + errno_text());
    links_[i] = std::move(s);
  }
  // Accept every higher rank; each says who it is, and must be ours.
  for (std::size_t left = peers_.size() - 1 - static_cast<std::size_t>(me); left > 0;) {
    const std::string what = core::concat("waiting for ", left, " rank(s) of this node to connect");
    wait_for(listener_.get(), POLLIN, deadline, what);
    UniqueFd s(accept4(listener_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (s.get() < 0) {
      if (errno == EAGAIN || errno == EINTR) continue;
      fail(what + ": accept: " + errno_text());
    }
    ucred cred{};
    socklen_t clen = sizeof cred;
    if (getsockopt(s.get(), SOL_SOCKET, SO_PEERCRED, &cred, &clen) != 0 || cred.uid != getuid())
      continue;  // not one of this job's ranks
    wait_for(s.get(), POLLIN, deadline, what);
    Hello hello{};
    if (recv(s.get(), &hello, sizeof hello, 0) != sizeof hello) continue;
    const auto it = std::find(peers_.begin(), peers_.end(), hello.rank);
    const std::size_t i = static_cast<std::size_t>(it - peers_.begin());
    if (it == peers_.end() || i <= static_cast<std::size_t>(me) || links_[i].get() >= 0) continue;
    links_[i] = std::move(s);
    --left;
  }
  // Every rank of the node is linked: the address goes, so nobody else can
  // connect later.
  listener_.reset();
  connected_ = true;
}

std::vector<UniqueFd> FdChannels::exchange(std::int64_t tag, int fd,
                                           const core::Deadline& deadline) {
  std::vector<UniqueFd> got(peers_.size());
  if (peers_.size() <= 1) return got;
  if (!connected_) connect_all(deadline);
  for (std::size_t i = 0; i < peers_.size(); ++i) {
    if (peers_[i] == self_) continue;
    const std::string what = core::concat("passing region ", tag, " to rank ", peers_[i]);
    FdPacket p;
    p.m.tag = tag;
    cmsghdr* c = CMSG_FIRSTHDR(&p.h);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(c), &fd, sizeof fd);
    while (sendmsg(links_[i].get(), &p.h, MSG_NOSIGNAL) != sizeof p.m) {
      if (errno != EAGAIN && errno != EINTR)
        fail(what + ": " + (errno == EPIPE ? std::string("it is gone") : errno_text()));
      wait_for(links_[i].get(), POLLOUT, deadline, what);
    }
  }
  for (std::size_t i = 0; i < peers_.size(); ++i) {
    if (peers_[i] == self_) continue;
    const std::string what = core::concat("receiving region ", tag, " of rank ", peers_[i]);
    FdPacket p;
    msghdr& h = p.h;
    ssize_t n;
    while ((n = recvmsg(links_[i].get(), &h, MSG_CMSG_CLOEXEC)) < 0) {
      if (errno != EAGAIN && errno != EINTR) fail(what + ": " + errno_text());
      wait_for(links_[i].get(), POLLIN, deadline, what);
    }
    if (n == 0) fail(what + ": it is gone (connection closed)");
    // Take the descriptor first, so that a bad message cannot leak it.
    UniqueFd received;
    for (cmsghdr* c = CMSG_FIRSTHDR(&h); c; c = CMSG_NXTHDR(&h, c))
      if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS &&
          c->cmsg_len == CMSG_LEN(sizeof(int))) {
        int rfd = -1;
        std::memcpy(&rfd, CMSG_DATA(c), sizeof rfd);
        received = UniqueFd(rfd);
      }
    if (n != sizeof p.m || (h.msg_flags & MSG_CTRUNC) || received.get() < 0)
      fail(what + ": a malformed message (" + std::to_string(n) + " bytes)");
    if (p.m.tag != tag) fail(what + ": got region " + std::to_string(p.m.tag) + " instead");
    got[i] = std::move(received);
  }
  return got;
}

}  // namespace epx::comm::transport
