// Logging like NCCL: EPX_LOG_LEVEL=WARN|INFO|DEBUG|TRACE, EPX_LOG_SUBSYS=a
// comma list of subsystems (or ALL, or ^LIST to exclude), EPX_LOG_FILE=path
// with %h host, %p pid, %r rank. Lines start "host:pid [rank r/R] EPX WARN file:line".
#pragma once

#include <string>

#include "core/check.hpp"

namespace epx::core {

enum class LogLevel : int { Warn = 0, Info = 1, Debug = 2, Trace = 3 };
enum class Subsys : unsigned {
  Core = 1u << 0,
  Comm = 1u << 1,
  Transport = 1u << 2,
  Kernels = 1u << 3,
  Pipeline = 1u << 4,
  Balancer = 1u << 5,
  Launch = 1u << 6,
};

bool log_enabled(LogLevel level, Subsys subsys) noexcept;
void log_write(LogLevel level, Subsys subsys, const char* file, int line, const std::string& msg);

}  // namespace epx::core

// TRACE logging compiles out unless EPX_ENABLE_TRACE is defined (CMake option).
#ifdef EPX_ENABLE_TRACE
#define EPX_TRACE_ENABLED 1
#else
#define EPX_TRACE_ENABLED 0
#endif

#define EPX_LOG(level, subsys, ...)                                                          \
  do {                                                                                       \
    if ((::epx::core::LogLevel::level != ::epx::core::LogLevel::Trace || EPX_TRACE_ENABLED) && \
        ::epx::core::log_enabled(::epx::core::LogLevel::level, ::epx::core::Subsys::subsys))   \
      ::epx::core::log_write(::epx::core::LogLevel::level, ::epx::core::Subsys::subsys,       \
                             __FILE__, __LINE__, ::epx::core::concat(__VA_ARGS__));           \
  } while (0)
