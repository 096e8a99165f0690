// The batch scheduler's waiting requests take free slots round-robin by
// caller (BatchRequest::caller), each caller's in arrival order: a caller
// that queued many requests first does not hold back one that queued later.
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "engine/batch_scheduler.h"
#include "tests/test_util/model.h"

namespace nanoserve {
namespace batch_fairness_test {

TEST(BatchFairnessTest, WaitingRequestsAreAdmittedRoundRobinByCaller) {
  auto model = testing::TinyModel();
  BatchSchedulerOptions options;
  options.max_batch = 1;  // one at a time: the order they end is the order admitted
  auto scheduler = BatchScheduler::Create(model.get(), options).value();
  absl::Mutex mu;
  std::vector<std::string> ended;
  absl::Notification first_token, all_queued, last_done;
  auto request = [&](const std::string& caller, const std::string& name) {
    BatchRequest r;
    r.prompt = {1, 2, 3};
    r.max_new_tokens = 3;
    r.stop_at_end_of_text = false;
    r.caller = caller;
    r.on_done = [&, name](const absl::Status& status, const BatchResult&) {
      EXPECT_TRUE(status.ok()) << name << ": " << status;
      absl::MutexLock lock(&mu);
      ended.push_back(name);
      if (ended.size() == 6) last_done.Notify();
    };
    return r;
  };
  // a1 holds the slot (its first token waits) until every other is queued.
  BatchRequest a1 = request("a", "a1");
  a1.on_token = [&](int) {
    if (first_token.HasBeenNotified()) return;
    first_token.Notify();
    all_queued.WaitForNotification();
  };
  ASSERT_TRUE(scheduler->Submit(std::move(a1)).ok());
  ASSERT_TRUE(first_token.WaitForNotificationWithTimeout(absl::Seconds(60)));
  for (const auto& [caller, name] : std::vector<std::pair<std::string, std::string>>{
           {"a", "a2"}, {"a", "a3"}, {"b", "b1"}, {"b", "b2"}, {"c", "c1"}}) {
    ASSERT_TRUE(scheduler->Submit(request(caller, name)).ok());
  }
  EXPECT_EQ(scheduler->queued(), 5);
  all_queued.Notify();
  ASSERT_TRUE(last_done.WaitForNotificationWithTimeout(absl::Seconds(60)));
  absl::MutexLock lock(&mu);
  // Arrival order would be a1 a2 a3 b1 b2 c1.
  EXPECT_EQ(ended, (std::vector<std::string>{"a1", "b1", "c1", "a2", "b2", "a3"}));
}

// One caller (every request's caller "", as before callers were known):
// arrival order.
TEST(BatchFairnessTest, OneCallersRequestsAreAdmittedInArrivalOrder) {
  auto model = testing::TinyModel();
  BatchSchedulerOptions options;
  options.max_batch = 1;
  auto scheduler = BatchScheduler::Create(model.get(), options).value();
  absl::Mutex mu;
  std::vector<int> ended;
  absl::Notification first_token, all_queued, last_done;
  for (int i = 0; i < 5; ++i) {
    BatchRequest r;
    r.prompt = {1, 2, 3};
    r.max_new_tokens = 2;
    r.stop_at_end_of_text = false;
    if (i == 0) {
      r.on_token = [&](int) {
        if (first_token.HasBeenNotified()) return;
        first_token.Notify();
        all_queued.WaitForNotification();
      };
    }
    r.on_done = [&, i](const absl::Status&, const BatchResult&) {
      absl::MutexLock lock(&mu);
      ended.push_back(i);
      if (ended.size() == 5) last_done.Notify();
    };
    ASSERT_TRUE(scheduler->Submit(std::move(r)).ok());
    if (i == 0) ASSERT_TRUE(first_token.WaitForNotificationWithTimeout(absl::Seconds(60)));
  }
  all_queued.Notify();
  ASSERT_TRUE(last_done.WaitForNotificationWithTimeout(absl::Seconds(60)));
  absl::MutexLock lock(&mu);
  EXPECT_EQ(ended, (std::vector<int>{0, 1, 2, 3, 4}));
}

}  // namespace batch_fairness_test
}  // namespace nanoserve
