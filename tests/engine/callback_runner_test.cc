// The scheduler's callback thread: batches run in the order posted, off the
// posting thread; Post waits for the batch before (one in flight); Stop runs
// what was posted; busy_for grows while a batch does not end.
#include "engine/callback_runner.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"

namespace nanoserve {
namespace callback_runner_test {

TEST(CallbackRunnerTest, BatchesRunInOrderOffThePostingThread) {
  CallbackRunner runner;
  absl::Mutex mu;
  std::vector<int> ran;
  std::atomic<bool> on_poster{false};
  const std::thread::id poster = std::this_thread::get_id();
  for (int b = 0; b < 20; ++b) {
    CallbackRunner::Batch batch;
    for (int i = 0; i < 5; ++i) {
      batch.push_back([&, n = b * 5 + i] {
        if (std::this_thread::get_id() == poster) on_poster = true;
        absl::MutexLock lock(&mu);
        ran.push_back(n);
      });
    }
    runner.Post(std::move(batch));
  }
  runner.Stop();  // runs the last batch before it returns
  EXPECT_FALSE(on_poster.load());
  ASSERT_EQ(ran.size(), 100u);
  for (int n = 0; n < 100; ++n) EXPECT_EQ(ran[n], n);
}

TEST(CallbackRunnerTest, PostWaitsForTheBatchBeforeAndBusyForGrowsMeanwhile) {
  CallbackRunner runner;
  absl::Notification entered, release;
  runner.Post({[&] {
    entered.Notify();
    release.WaitForNotification();
  }});
  ASSERT_TRUE(entered.WaitForNotificationWithTimeout(absl::Seconds(30)));
  std::atomic<bool> second_posted{false};
  std::thread poster([&] {
    runner.Post({[] {}});
    second_posted = true;
  });
  absl::SleepFor(absl::Milliseconds(200));
  EXPECT_FALSE(second_posted.load());  // the first batch still runs
  EXPECT_GE(runner.busy_for(), absl::Milliseconds(200));
  release.Notify();
  poster.join();
  EXPECT_TRUE(second_posted.load());
  runner.Stop();
  EXPECT_EQ(runner.busy_for(), absl::ZeroDuration());
}

TEST(CallbackRunnerTest, AfterStopABatchRunsOnThePostingThread) {
  CallbackRunner runner;
  runner.Stop();
  runner.Stop();  // idempotent
  std::thread::id ran_on;
  runner.Post({[&] { ran_on = std::this_thread::get_id(); }});
  EXPECT_EQ(ran_on, std::this_thread::get_id());
}

}  // namespace callback_runner_test
}  // namespace nanoserve
