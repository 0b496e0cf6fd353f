// Files written whole or not at all: checkpoints and safetensors files go
// through a temporary file that is fsynced and renamed into place, so a crash
// at any moment leaves either the old file or the complete new one.
#pragma once

#include <cstddef>
#include <string>
#include <utility>
#include <vector>

namespace epx::core {

// One file descriptor, closed on scope exit.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd();
  int get() const noexcept { return fd_; }
  int release() noexcept {
    const int f = fd_;
    fd_ = -1;
    return f;
  }

 private:
  int fd_;
};

std::string errno_text();

// Writes the pieces, in order, to `path` through "<path>.tmp.<pid>": written,
// fsynced, closed, renamed, then the directory synced. On failure the
// temporary is removed and InvalidArgument names `op` and the file.
void write_file_atomically(const std::string& path,
                           const std::vector<std::pair<const void*, std::size_t>>& pieces,
                           const char* op);

// fsync of a directory, so that renames in it are durable (best effort:
// a failure leaves complete files under one name or the other).
void sync_directory(const std::string& dir);

}  // namespace epx::core
