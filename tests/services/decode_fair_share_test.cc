// Decode's admission shared between callers (DecodeStageOptions::
// max_tokens_in_flight_per_caller): a caller at its share is refused with
// a message naming it, the bound and the flag, while another caller is
// admitted; a caller's share comes back however its calls end (finished,
// cancelled before or in the batch, deadline, bad input, refused by the
// total, EndAll); the metrics say who holds what. Calls are held in flight
// by a prefiller that waits for the test (tests/test_util/gated_prefiller.h).
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "decode_service/decode_stage.h"
#include "tests/test_util/shared_decode_stage.h"

namespace nanoserve {
namespace decode_fair_share_test {

class Events : public GenerateEvents {
 public:
  void OnToken(const StreamedToken&) override {
    if (hold_at_first_token && !first.HasBeenNotified()) {
      first.Notify();
      release.WaitForNotification();
    }
  }
  void OnFinish(const absl::Status& s, const GenerateSummary&) override {
    absl::MutexLock lock(&mu);
    status = s;
    done.Notify();
  }
  absl::Status Await() {
    EXPECT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(60)));
    absl::MutexLock lock(&mu);
    return status;
  }

  bool hold_at_first_token = false;
  absl::Notification first, release, done;
  absl::Mutex mu;
  absl::Status status;
};

class DecodeFairShareTest : public ::testing::Test {
 protected:
  // tests/test_util/shared_decode_stage.h: 300 tokens of work in all, 100
  // per caller; a call of 3 + 60 is 63.
  ~DecodeFairShareTest() override {
    shared_.prefill.Open();
    EXPECT_TRUE(AwaitNothingInFlight());
  }

  std::shared_ptr<DecodeStage::Call> Start(const std::string& caller,
                                           std::shared_ptr<Events> events, int64_t max_new = 60,
                                           absl::Time deadline = absl::InfiniteFuture(),
                                           std::vector<int> prompt = {1, 2, 3}) {
    GenerateParams params;
    params.prompt_ids = std::move(prompt);
    params.max_new_tokens = max_new;
    params.stop_at_end_of_text = false;
    params.caller = caller;
    return shared_.stage->Start(params, deadline, std::move(events));
  }

  double Metric(const std::string& name) { return shared_.Metric(name); }
  // Every share given back: no tokens of work and no caller in flight.
  bool AwaitNothingInFlight() {
    const absl::Time end = absl::Now() + absl::Seconds(30);
    while (Metric("nanoserve_decode_tokens_in_flight") != 0 ||
           Metric("nanoserve_decode_callers_in_flight") != 0 ||
           Metric("nanoserve_decode_caller_tokens_in_flight_max") != 0) {
      if (absl::Now() > end) return false;
      absl::SleepFor(absl::Milliseconds(5));
    }
    return true;
  }

  testing::SharedDecodeStage shared_;
};

TEST_F(DecodeFairShareTest, ACallerAtItsShareIsRefusedWhileAnotherIsAdmitted) {
  auto a1 = std::make_shared<Events>();
  Start("a", a1);
  ASSERT_TRUE(shared_.prefill.AwaitEntered(1));
  auto a2 = std::make_shared<Events>();
  Start("a", a2);                           // 63 + 63 > 100
  ASSERT_TRUE(a2->done.HasBeenNotified());  // at once
  const absl::Status refused = a2->Await();
  EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted);
  for (const std::string& part : {"caller 'a'", "has 63 tokens of work in flight", "100",
                                  "--max_tokens_in_flight_per_caller"}) {
    EXPECT_NE(refused.message().find(part), absl::string_view::npos) << part << ": " << refused;
  }
  auto b1 = std::make_shared<Events>();
  Start("b", b1);
  ASSERT_TRUE(shared_.prefill.AwaitEntered(2));
  EXPECT_FALSE(b1->done.HasBeenNotified());
  EXPECT_EQ(Metric("nanoserve_decode_tokens_in_flight"), 126);
  EXPECT_EQ(Metric("nanoserve_decode_callers_in_flight"), 2);
  EXPECT_EQ(Metric("nanoserve_decode_caller_tokens_in_flight_max"), 63);
  EXPECT_EQ(Metric("nanoserve_decode_caller_share_refusals_total"), 1);
  EXPECT_EQ(Metric("nanoserve_decode_requests_total{code=\"RESOURCE_EXHAUSTED\"}"), 1);

  shared_.prefill.Open();  // decode computes the prompts itself
  EXPECT_TRUE(a1->Await().ok()) << a1->Await();
  EXPECT_TRUE(b1->Await().ok()) << b1->Await();
  ASSERT_TRUE(AwaitNothingInFlight());
  auto again = std::make_shared<Events>();  // a's share came back
  Start("a", again);
  EXPECT_TRUE(again->Await().ok()) << again->Await();
}

// Cancelled while waiting for prefill, and while in the batch: the share
// comes back either way.
TEST_F(DecodeFairShareTest, SharesComeBackWhenCallsFinishOrAreCancelled) {
  auto waiting = std::make_shared<Events>();
  auto handle = Start("a", waiting);
  ASSERT_TRUE(shared_.prefill.AwaitEntered(1));
  shared_.stage->Cancel(handle);
  shared_.prefill.Open();
  EXPECT_EQ(waiting->Await().code(), absl::StatusCode::kCancelled);
  ASSERT_TRUE(AwaitNothingInFlight());

  auto running = std::make_shared<Events>();
  running->hold_at_first_token = true;
  handle = Start("a", running);
  ASSERT_TRUE(running->first.WaitForNotificationWithTimeout(absl::Seconds(60)));
  EXPECT_EQ(Metric("nanoserve_decode_caller_tokens_in_flight_max"), 63);
  shared_.stage->Cancel(handle);
  running->release.Notify();
  EXPECT_EQ(running->Await().code(), absl::StatusCode::kCancelled);
  ASSERT_TRUE(AwaitNothingInFlight());

  auto finished = std::make_shared<Events>();
  Start("a", finished, 5);
  EXPECT_TRUE(finished->Await().ok()) << finished->Await();
  EXPECT_TRUE(AwaitNothingInFlight());
}

TEST_F(DecodeFairShareTest, SharesComeBackAfterADeadlineAnErrorARefusalOrEndAll) {
  auto late = std::make_shared<Events>();
  Start("a", late, 60, absl::Now() + absl::Milliseconds(200));
  EXPECT_EQ(late->Await().code(), absl::StatusCode::kDeadlineExceeded);
  ASSERT_TRUE(AwaitNothingInFlight());

  auto bad = std::make_shared<Events>();
  Start("a", bad, 60, absl::InfiniteFuture(), {1, 999999});
  EXPECT_EQ(bad->Await().code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(AwaitNothingInFlight());

  // Four callers of 63 fill 252 of the 300; a fifth is refused by the total
  // and keeps no share.
  std::vector<std::shared_ptr<Events>> held;
  for (const std::string caller : {"b", "c", "d", "e"}) {
    held.push_back(std::make_shared<Events>());
    Start(caller, held.back());
  }
  auto full = std::make_shared<Events>();
  Start("f", full);
  const absl::Status refused = full->Await();
  EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(refused.message().find("decode is full"), absl::string_view::npos) << refused;
  EXPECT_EQ(Metric("nanoserve_decode_callers_in_flight"), 4);
  EXPECT_EQ(Metric("nanoserve_decode_tokens_in_flight"), 252);
  shared_.prefill.Open();
  for (const auto& events : held) EXPECT_TRUE(events->Await().ok()) << events->Await();
  ASSERT_TRUE(AwaitNothingInFlight());

  auto ended = std::make_shared<Events>();
  ended->hold_at_first_token = true;
  Start("a", ended);
  ASSERT_TRUE(ended->first.WaitForNotificationWithTimeout(absl::Seconds(60)));
  shared_.stage->EndAll(absl::UnavailableError("shutting down"));
  ended->release.Notify();
  EXPECT_EQ(ended->Await().code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(AwaitNothingInFlight());
}

}  // namespace decode_fair_share_test
}  // namespace nanoserve
