// Waiting on peers when ranks may outnumber cores: spin a little, then yield,
// then sleep, so the rank being waited for gets the core. Every wait carries
// a Deadline and checks it on each round.
#pragma once

#include <sched.h>
#include <time.h>

#include <chrono>

namespace epx::core {

class Deadline {
 public:
  using Clock = std::chrono::steady_clock;
  // seconds >= 1e9 (or inf) never expires: converting it would overflow the clock.
  explicit Deadline(double seconds)
      : seconds_(seconds),
        end_(seconds < kForever ? Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                                     std::chrono::duration<double>(seconds))
                                : Clock::time_point::max()) {}
  bool expired() const noexcept { return Clock::now() >= end_; }
  double seconds() const noexcept { return seconds_; }

  static constexpr double kForever = 1e9;

 private:
  double seconds_;
  Clock::time_point end_;
};

class Backoff {
 public:
  void pause() noexcept {
    ++rounds_;
    if (rounds_ <= kSpinRounds) {
      for (int i = 0; i < 32; ++i) cpu_relax();
    } else if (rounds_ <= kYieldRounds) {
      sched_yield();
    } else {
      // 20 us, then up to 200 us: short enough for latency, long enough to free the core.
      const long us = rounds_ < kYieldRounds + 100 ? 20 : 200;
      timespec ts{0, us * 1000};
      nanosleep(&ts, nullptr);
    }
  }
  void reset() noexcept { rounds_ = 0; }

 private:
  static void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield");
#endif
  }
  static constexpr int kSpinRounds = 16;
  static constexpr int kYieldRounds = 2000;
  int rounds_ = 0;
};

}  // namespace epx::core
