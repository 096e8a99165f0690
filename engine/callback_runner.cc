#include "engine/callback_runner.h"

#include <algorithm>
#include <utility>

namespace nanoserve {

CallbackRunner::CallbackRunner() {
  thread_ = std::thread([this] { Loop(); });
}

CallbackRunner::~CallbackRunner() { Stop(); }

void CallbackRunner::Post(Batch batch) {
  std::unique_lock<std::mutex> lock(mu_);
  changed_.wait(lock, [&] { return stop_ || (next_.empty() && !running_); });
  if (stop_) {
    lock.unlock();
    for (auto& callback : batch) callback();
    return;
  }
  if (batch.empty()) return;
  next_ = std::move(batch);
  changed_.notify_all();
}

void CallbackRunner::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    changed_.notify_all();
  }
  std::lock_guard<std::mutex> lock(join_mu_);
  if (thread_.joinable()) thread_.join();
}

absl::Duration CallbackRunner::busy_for(absl::Time now) const {
  const int64_t began = began_ns_.load();
  if (began == 0) return absl::ZeroDuration();
  return std::max(now - absl::FromUnixNanos(began), absl::ZeroDuration());
}

void CallbackRunner::Loop() {
  for (;;) {
    Batch batch;
    {
      std::unique_lock<std::mutex> lock(mu_);
      changed_.wait(lock, [&] { return stop_ || !next_.empty(); });
      if (next_.empty()) return;  // stopped, and everything posted has run
      batch.swap(next_);
      running_ = true;
    }
    began_ns_.store(absl::ToUnixNanos(absl::Now()));
    for (auto& callback : batch) callback();
    batch.clear();  // what the callbacks held goes before the next Post
    began_ns_.store(0);
    std::lock_guard<std::mutex> lock(mu_);
    running_ = false;
    changed_.notify_all();
  }
}

}  // namespace nanoserve
