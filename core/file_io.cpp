#include "core/file_io.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "core/check.hpp"

namespace epx::core {

Fd::~Fd() {
  if (fd_ >= 0) ::close(fd_);
}

std::string errno_text() { return std::strerror(errno); }

namespace {

void write_all(int fd, const void* data, std::size_t n, const std::string& tmp, const char* op) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = ::write(fd, p, std::min<std::size_t>(n, std::size_t{1} << 30));
    if (w < 0) {
      if (errno == EINTR) continue;
      EPX_THROW(InvalidArgument, op, ": cannot write ", tmp, ": ", errno_text());
    }
    p += w;
    n -= static_cast<std::size_t>(w);
  }
}

std::string directory_of(const std::string& path) {
  const auto slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

}  // namespace

void write_file_atomically(const std::string& path,
                           const std::vector<std::pair<const void*, std::size_t>>& pieces,
                           const char* op) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  EPX_CHECK(fd.get() >= 0, InvalidArgument, op, ": cannot create ", tmp, ": ", errno_text());
  try {
    for (const auto& [data, bytes] : pieces) write_all(fd.get(), data, bytes, tmp, op);
    // Data on disk before the rename: otherwise a crash can leave the new name
    // pointing at a file of holes.
    EPX_CHECK(::fsync(fd.get()) == 0, InvalidArgument, op, ": cannot fsync ", tmp, ": ",
              errno_text());
    EPX_CHECK(::close(fd.release()) == 0, InvalidArgument, op, ": cannot close ", tmp, ": ",
              errno_text());
    EPX_CHECK(::rename(tmp.c_str(), path.c_str()) == 0, InvalidArgument, op, ": cannot rename ",
              tmp, " to ", path, ": ", errno_text());
  } catch (...) {
    ::unlink(tmp.c_str());
    throw;
  }
  sync_directory(directory_of(path));
}

void sync_directory(const std::string& dir) {
  Fd d(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (d.get() >= 0) ::fsync(d.get());
}

}  // namespace epx::core
