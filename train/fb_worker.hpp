// A persistent second thread for the backward half of DualPipe's FB units
// (train/pipeline_stage.cpp): run() hands it a job, wait() returns when the
// job is done and rethrows what it threw. One thread for the whole run, so
// its thread-local scratch (comm's FP8 staging) is kept from unit to unit.
#pragma once

#include <condition_variable>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>

namespace epx::train {

class FbWorker {
 public:
  FbWorker();
  ~FbWorker();
  FbWorker(const FbWorker&) = delete;
  FbWorker& operator=(const FbWorker&) = delete;

  // Starts `job` on the worker (the previous one must have been waited for).
  void run(std::function<void()> job);
  // Blocks until the job is done; rethrows its exception.
  void wait();

 private:
  void loop();
  std::mutex mutex_;
  std::condition_variable cv_;
  std::function<void()> job_;
  bool busy_ = false, stop_ = false;
  std::exception_ptr error_;
  std::thread thread_;  // last: starts after the members it uses
};

}  // namespace epx::train
