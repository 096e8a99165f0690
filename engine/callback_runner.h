// Runs a batch scheduler's callbacks (each token streamed, each request's
// end) on a thread of their own, so that the next decode step runs on the
// GPU while the last step's tokens are handed to their streams: a token's
// callback does the streaming work (detokenizing, serializing, a gRPC write
// started inline), ~5-10 us each, 0.3-0.6 ms for a batch of 64 on the step's
// critical path otherwise.
//
// The scheduler posts one turn's callbacks at the end of the turn; they run
// in the order posted, one batch after another. Post waits until the batch
// before has run, so at most one turn's callbacks are in flight: a callback
// that blocks holds the scheduler one turn later, and nothing queues up
// without bound.
//
// Thread safety: Post and Stop from one thread (the scheduler's); busy_for
// from any.
#ifndef NANOSERVE_ENGINE_CALLBACK_RUNNER_H_
#define NANOSERVE_ENGINE_CALLBACK_RUNNER_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace nanoserve {

class CallbackRunner {
 public:
  using Batch = std::vector<std::function<void()>>;

  CallbackRunner();
  // Stop().
  ~CallbackRunner();
  CallbackRunner(const CallbackRunner&) = delete;
  CallbackRunner& operator=(const CallbackRunner&) = delete;

  // Waits until the batch posted before has run, then hands `batch` to the
  // thread (an empty one only waits). After Stop: runs it here.
  void Post(Batch batch);
  // Runs what was posted and joins the thread; idempotent.
  void Stop();
  // How long the batch running now has run; zero when none runs.
  absl::Duration busy_for(absl::Time now = absl::Now()) const;

 private:
  void Loop();

  std::mutex mu_;
  std::condition_variable changed_;
  Batch next_;            // guarded by mu_; posted, not yet taken
  bool running_ = false;  // guarded by mu_; the thread runs a batch
  bool stop_ = false;     // guarded by mu_
  std::mutex join_mu_;
  // Unix nanoseconds the running batch began; 0 while none runs.
  std::atomic<int64_t> began_ns_{0};
  std::thread thread_;
};

}  // namespace nanoserve

#endif  // NANOSERVE_ENGINE_CALLBACK_RUNNER_H_
