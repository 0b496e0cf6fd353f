// Error construction and checks. Messages name the operation, the argument,
// the received and expected value, the rank and the source line:
//   "[rank 3/8] dispatch: topk_idx[17,2] = 300, expected -1 or < num_experts=256 (comm/dispatch.cpp:88)"
#pragma once

#include <exception>
#include <sstream>
#include <string>
#include <utility>

#include <epx/error.hpp>

namespace epx::core {

// The "[rank r/R] " prefix of this process, set once the first Group exists
// (empty before, e.g. in single-process kernels).
std::string rank_prefix();
void set_rank_prefix(std::string prefix);

template <class... Args>
std::string concat(Args&&... args) {
  std::ostringstream os;
  (os << ... << std::forward<Args>(args));
  return os.str();
}

[[noreturn]] void raise(ErrorCode code, const std::string& what, const char* file, int line);

// Rethrows `error`; an epx::Error as a poisoned copy (same code and message),
// for a caller that has just aborted the group or failed the object.
[[noreturn]] void rethrow_poisoned(const std::exception_ptr& error);

}  // namespace epx::core

// EPX_THROW(code, parts...): throws epx::Error with the rank prefix and file:line.
#define EPX_THROW(code, ...) \
  ::epx::core::raise(::epx::ErrorCode::code, ::epx::core::concat(__VA_ARGS__), __FILE__, __LINE__)

#define EPX_CHECK(cond, code, ...)      \
  do {                                  \
    if (!(cond)) EPX_THROW(code, __VA_ARGS__); \
  } while (0)

// EPX_CHECK_EQ/NE/LT/LE/GE(a, b, code, what...): prints both values.
#define EPX_CHECK_OP_(a, b, op, code, ...)                                              \
  do {                                                                                 \
    const auto& epx_a_ = (a);                                                          \
    const auto& epx_b_ = (b);                                                          \
    if (!(epx_a_ op epx_b_))                                                           \
      EPX_THROW(code, __VA_ARGS__, ": " #a " = ", epx_a_, ", expected " #op " ", epx_b_); \
  } while (0)
#define EPX_CHECK_EQ(a, b, code, ...) EPX_CHECK_OP_(a, b, ==, code, __VA_ARGS__)
#define EPX_CHECK_NE(a, b, code, ...) EPX_CHECK_OP_(a, b, !=, code, __VA_ARGS__)
#define EPX_CHECK_LT(a, b, code, ...) EPX_CHECK_OP_(a, b, <, code, __VA_ARGS__)
#define EPX_CHECK_LE(a, b, code, ...) EPX_CHECK_OP_(a, b, <=, code, __VA_ARGS__)
#define EPX_CHECK_GE(a, b, code, ...) EPX_CHECK_OP_(a, b, >=, code, __VA_ARGS__)
