// The two micro-batches of a DualPipe FB unit run on two threads that take
// turns computing: a thread holds the turn while it computes and lets go of
// it for each comm::Buffer call (dispatch, combine), so one micro-batch's
// all-to-all is in flight while the other computes, and compute never runs
// on both at once (DeepSeek's FB overlap, with the pieces attention,
// dispatch, experts, combine). Each Buffer is used by one thread only, so
// every rank of an EP group still makes the same calls on it in the same
// order, and the numbers are those of running the two halves one after the
// other.
#pragma once

#include <chrono>
#include <mutex>

namespace epx::model {

class ComputeTurn {
 public:
  void take() {
    mutex_.lock();
    change([this] { computing_ = true; });
  }
  void give() {
    change([this] { computing_ = false; });
    mutex_.unlock();
  }
  // Around a comm call (the thread does not hold the turn meanwhile).
  void comm_begin() {
    change([this] { ++in_comm_; });
  }
  void comm_end() {
    change([this] { --in_comm_; });
  }
  // Read once both threads are done: the time the turn was held (the unit's
  // compute), and the part of it during which the other thread was in a
  // comm call (comm hidden behind compute).
  double computing_ms() const { return ms(computing_time_); }
  double hidden_ms() const { return ms(hidden_time_); }

 private:
  using Clock = std::chrono::steady_clock;
  static double ms(Clock::duration d) {
    return std::chrono::duration<double, std::milli>(d).count();
  }
  template <class F>
  void change(F&& f) {
    std::lock_guard<std::mutex> lock(state_mutex_);
    const Clock::time_point now = Clock::now();
    if (computing_) computing_time_ += now - last_;
    if (computing_ && in_comm_ > 0) hidden_time_ += now - last_;
    last_ = now;
    f();
  }
  std::mutex mutex_;  // the turn
  std::mutex state_mutex_;
  bool computing_ = false;
  int in_comm_ = 0;
  Clock::time_point last_ = Clock::now();
  Clock::duration computing_time_{}, hidden_time_{};
};

// Holds the turn for a scope (a thread's share of an FB unit).
class ComputingScope {
 public:
  explicit ComputingScope(ComputeTurn* turn) : turn_(turn) {
    if (turn_) turn_->take();
  }
  ~ComputingScope() {
    if (turn_) turn_->give();
  }
  ComputingScope(const ComputingScope&) = delete;
  ComputingScope& operator=(const ComputingScope&) = delete;

 private:
  ComputeTurn* turn_;
};

// Lets go of the turn for a scope (a comm call inside a ComputingScope).
class CommScope {
 public:
  explicit CommScope(ComputeTurn* turn) : turn_(turn) {
    if (!turn_) return;
    turn_->give();
    turn_->comm_begin();
  }
  ~CommScope() {
    if (!turn_) return;
    turn_->comm_end();
    turn_->take();
  }
  CommScope(const CommScope&) = delete;
  CommScope& operator=(const CommScope&) = delete;

 private:
  ComputeTurn* turn_;
};

}  // namespace epx::model
