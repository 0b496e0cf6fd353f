#include "core/log.hpp"

#include <unistd.h>

#include <cstdio>
#include <mutex>
#include <sstream>

#include "core/config.hpp"

namespace epx::core {

namespace {

struct LogConfig {
  LogLevel level = LogLevel::Warn;
  unsigned mask = ~0u;
  std::FILE* out = stderr;
  std::string host;
};

LogLevel parse_level(const std::string& s) {
  if (s == "WARN" || s == "warn") return LogLevel::Warn;
  if (s == "INFO" || s == "info") return LogLevel::Info;
  if (s == "DEBUG" || s == "debug") return LogLevel::Debug;
  if (s == "TRACE" || s == "trace") return LogLevel::Trace;
  std::fprintf(stderr, "EPX WARN EPX_LOG_LEVEL=%s is not WARN, INFO, DEBUG or TRACE; using WARN\n",
               s.c_str());
  return LogLevel::Warn;
}

unsigned parse_subsys(std::string s) {
  bool exclude = !s.empty() && s[0] == '^';
  if (exclude) s.erase(0, 1);
  unsigned mask = 0;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item == "ALL") mask |= ~0u;
    else if (item == "CORE") mask |= unsigned(Subsys::Core);
    else if (item == "COMM") mask |= unsigned(Subsys::Comm);
    else if (item == "TRANSPORT") mask |= unsigned(Subsys::Transport);
    else if (item == "KERNELS") mask |= unsigned(Subsys::Kernels);
    else if (item == "PIPELINE") mask |= unsigned(Subsys::Pipeline);
    else if (item == "BALANCER") mask |= unsigned(Subsys::Balancer);
    else if (item == "LAUNCH") mask |= unsigned(Subsys::Launch);
    else if (!item.empty())
      std::fprintf(stderr, "EPX WARN EPX_LOG_SUBSYS: unknown subsystem '%s' ignored\n", item.c_str());
  }
  return exclude ? ~mask : mask;
}

std::string expand_path(const std::string& pattern, const std::string& host) {
  std::string out;
  for (std::size_t i = 0; i < pattern.size(); ++i) {
    if (pattern[i] == '%' && i + 1 < pattern.size()) {
      char c = pattern[++i];
      if (c == 'h') out += host;
      else if (c == 'p') out += std::to_string(getpid());
      else if (c == 'r') {
        // The rank from the launcher, since logging may start before MPI_Init.
        const char* r = std::getenv("OMPI_COMM_WORLD_RANK");
        if (!r) r = std::getenv("PMI_RANK");
        if (!r) r = std::getenv("SLURM_PROCID");
        out += r ? r : "0";
      } else {
        out += '%';
        out += c;
      }
    } else {
      out += pattern[i];
    }
  }
  return out;
}

const LogConfig& config() {
  static const LogConfig cfg = [] {
    LogConfig c;
    c.level = parse_level(params::log_level.get());
    c.mask = parse_subsys(params::log_subsys.get());
    char host[256] = {0};
    gethostname(host, sizeof(host) - 1);
    c.host = host;
    const std::string& file = params::log_file.get();
    if (!file.empty()) {
      const std::string path = expand_path(file, c.host);
      if (std::FILE* f = std::fopen(path.c_str(), "a")) c.out = f;
      else std::fprintf(stderr, "EPX WARN cannot open EPX_LOG_FILE=%s; logging to stderr\n", path.c_str());
    }
    return c;
  }();
  return cfg;
}

const char* level_name(LogLevel l) {
  switch (l) {
    case LogLevel::Warn: return "WARN";
    case LogLevel::Info: return "INFO";
    case LogLevel::Debug: return "DEBUG";
    case LogLevel::Trace: return "TRACE";
  }
  return "?";
}

}  // namespace

bool log_enabled(LogLevel level, Subsys subsys) noexcept {
  const LogConfig& c = config();
  return static_cast<int>(level) <= static_cast<int>(c.level) && (c.mask & unsigned(subsys)) != 0;
}

void log_write(LogLevel level, Subsys, const char* file, int line, const std::string& msg) {
  static std::mutex m;
  const LogConfig& c = config();
  std::string prefix = rank_prefix();
  std::lock_guard<std::mutex> lock(m);
  std::fprintf(c.out, "%s:%d %s%sEPX %s %s:%d %s\n", c.host.c_str(), int(getpid()), prefix.c_str(),
               prefix.empty() ? "" : " ", level_name(level), file, line, msg.c_str());
  std::fflush(c.out);
}

}  // namespace epx::core
