// The decode stage end to end without a network: prefill runs in this
// process (a PrefillStage over a PrefixCache), pages are read from the same
// cache, and the tokens equal the offline engine's; a prompt sharing a
// cached prefix reuses it; every lease is released when calls end.
#include "decode_service/decode_stage.h"

#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "engine/generate.h"
#include "engine/kv_cache.h"
#include "kv_cache/prefix_cache.h"
#include "tests/test_util/model.h"
#include "tests/test_util/prefix_cache.h"

namespace nanoserve {
namespace decode_stage_test {

constexpr int64_t kPageSize = 8;

class RecordingEvents : public GenerateEvents {
 public:
  void OnToken(const StreamedToken& token) override {
    absl::MutexLock lock(&mu_);
    ids_.push_back(token.id);
  }
  void OnFinish(const absl::Status& status, const GenerateSummary& summary) override {
    absl::MutexLock lock(&mu_);
    status_ = status;
    summary_ = summary;
    done_.Notify();
  }

  absl::Mutex mu_;
  std::vector<int> ids_;
  absl::Status status_;
  GenerateSummary summary_;
  absl::Notification done_;
};

class DecodeStageTest : public ::testing::Test {
 protected:
  DecodeStageTest()
      : model_(testing::TinyModel()),
        tokenizer_(Gpt2Tokenizer::LoadDefault().value()),
        scheduler_(BatchScheduler::Create(model_.get(), BatchSchedulerOptions{}).value()),
        workers_(2) {
    cache_ = testing::ModelCache(*model_, kPageSize, 64);
    store_ = std::make_unique<LocalPrefixStore>(cache_.get());
    prefill_ =
        std::make_unique<PrefillStage>(model_.get(), store_.get(), PrefillStageOptions(), nullptr);
    stage_ = std::make_unique<DecodeStage>(tokenizer_.get(), scheduler_.get(), prefill_.get(),
                                           store_.get(), &workers_, DecodeStageOptions(), nullptr);
  }

  std::shared_ptr<RecordingEvents> Run(const std::vector<int>& prompt, int64_t max_new) {
    GenerateParams params;
    params.prompt_ids = prompt;
    params.max_new_tokens = max_new;
    params.stop_at_end_of_text = false;
    auto events = std::make_shared<RecordingEvents>();
    stage_->Start(params, absl::InfiniteFuture(), events);
    EXPECT_TRUE(events->done_.WaitForNotificationWithTimeout(absl::Seconds(60)));
    return events;
  }

  std::vector<int> Offline(const std::vector<int>& prompt, int64_t max_new) {
    GenerateOptions options;
    options.max_new_tokens = max_new;
    options.stop_at_end_of_text = false;
    return Generator(model_.get()).Generate({prompt}, options).value().sequences[0].output_ids;
  }

  // Lease releases run on the worker pool after a call ends.
  void ExpectNothingPinned() {
    const absl::Time end = absl::Now() + absl::Seconds(10);
    while (cache_->Stats().active_leases > 0 && absl::Now() < end) {
      absl::SleepFor(absl::Milliseconds(5));
    }
    EXPECT_EQ(cache_->Stats().active_leases, 0);
    EXPECT_EQ(cache_->Stats().pages_pinned, 0);
  }

  std::unique_ptr<Gpt2Model> model_;
  std::unique_ptr<Gpt2Tokenizer> tokenizer_;
  std::unique_ptr<BatchScheduler> scheduler_;
  WorkerPool workers_;
  std::unique_ptr<PrefixCache> cache_;
  std::unique_ptr<LocalPrefixStore> store_;
  std::unique_ptr<PrefillStage> prefill_;
  std::unique_ptr<DecodeStage> stage_;
};

TEST_F(DecodeStageTest, PrefillAndPagesFromTheStoreGiveTheOfflineTokens) {
  std::vector<int> prompt;
  for (int i = 0; i < 21; ++i) prompt.push_back((i * 37 + 5) % 512);
  auto first = Run(prompt, 10);
  ASSERT_TRUE(first->status_.ok()) << first->status_;
  testing::ExpectSameGreedy(*model_, prompt, Offline(prompt, 10), first->ids_);
  const GenerateSummary& s = first->summary_;
  EXPECT_TRUE(s.fallback_reason.empty()) << s.fallback_reason;
  EXPECT_EQ(s.prompt_tokens, 21);
  EXPECT_EQ(s.cached_prompt_tokens, 0);
  EXPECT_EQ(s.fetched_prompt_tokens, 16);    // two whole pages, read from the store
  EXPECT_EQ(s.recomputed_prompt_tokens, 5);  // the partial page
  EXPECT_GT(s.kv_bytes_fetched, 0);
  ExpectNothingPinned();

  // A longer prompt with the same start: prefill reuses the cached pages.
  std::vector<int> longer = prompt;
  for (int i = 0; i < 6; ++i) longer.push_back((i * 11 + 1) % 512);
  auto second = Run(longer, 6);
  ASSERT_TRUE(second->status_.ok()) << second->status_;
  testing::ExpectSameGreedy(*model_, longer, Offline(longer, 6), second->ids_);
  EXPECT_EQ(second->summary_.cached_prompt_tokens, 16);
  EXPECT_EQ(second->summary_.fetched_prompt_tokens, 24);
  ExpectNothingPinned();
  EXPECT_TRUE(cache_->CheckInvariants().ok());
}

// Prefill through `inner`, noting the thread each call's Prefill call was
// started on; the first call's prefill waits at a gate.
class StartRecordingPrefiller final : public Prefiller {
 public:
  explicit StartRecordingPrefiller(Prefiller* inner) : inner_(inner) {}
  absl::StatusOr<PrefillOutcome> Prefill(absl::Span<const PrefillPrompt> prompts,
                                         absl::Time deadline,
                                         const FirstTokens& on_first) override {
    if (first_.exchange(false)) {
      entered_.Notify();
      open_.WaitForNotification();
    }
    return inner_->Prefill(prompts, deadline, on_first);
  }
  std::unique_ptr<PendingPrefill> Start(std::vector<PrefillPrompt> prompts, absl::Time deadline,
                                        FirstTokens on_first) override {
    {
      absl::MutexLock lock(&mu_);
      started_on_.push_back(std::this_thread::get_id());
    }
    return Prefiller::Start(std::move(prompts), deadline, std::move(on_first));
  }
  void Abandon(const PrefillOutcome& outcome) override { inner_->Abandon(outcome); }

  absl::Notification entered_, open_;
  absl::Mutex mu_;
  std::vector<std::thread::id> started_on_;

 private:
  Prefiller* inner_;
  std::atomic<bool> first_{true};
};

// A call's Prefill call starts on the thread that starts the call while
// fewer than --workers wait for a worker; past them, on the worker.
TEST_F(DecodeStageTest, AtMostWorkersCallsStartTheirPrefillBeforeAWorkerTakesThem) {
  StartRecordingPrefiller prefill(prefill_.get());
  WorkerPool one(1);
  DecodeStage stage(tokenizer_.get(), scheduler_.get(), &prefill, store_.get(), &one,
                    DecodeStageOptions(), nullptr);
  std::vector<int> prompt;
  for (int i = 0; i < 19; ++i) prompt.push_back((i * 13 + 2) % 512);
  auto start = [&] {
    GenerateParams params;
    params.prompt_ids = prompt;
    params.max_new_tokens = 4;
    params.stop_at_end_of_text = false;
    auto events = std::make_shared<RecordingEvents>();
    stage.Start(params, absl::InfiniteFuture(), events);
    return events;
  };
  auto a = start();
  prefill.entered_.WaitForNotification();  // the worker waits in a's prefill
  auto b = start();
  prefill.open_.Notify();
  for (const auto& events : {a, b}) {
    ASSERT_TRUE(events->done_.WaitForNotificationWithTimeout(absl::Seconds(60)));
    ASSERT_TRUE(events->status_.ok()) << events->status_;
    testing::ExpectSameGreedy(*model_, prompt, Offline(prompt, 4), events->ids_);
  }
  auto c = start();  // nothing waits now: early again
  ASSERT_TRUE(c->done_.WaitForNotificationWithTimeout(absl::Seconds(60)));
  absl::MutexLock lock(&prefill.mu_);
  ASSERT_EQ(prefill.started_on_.size(), 3u);
  EXPECT_EQ(prefill.started_on_[0], std::this_thread::get_id());
  EXPECT_NE(prefill.started_on_[1], std::this_thread::get_id()) << "b started before a worker";
  EXPECT_EQ(prefill.started_on_[2], std::this_thread::get_id());
  ExpectNothingPinned();
}

// A prefill that ends only when cancelled.
class CancelOnlyPrefiller final : public Prefiller {
 public:
  class Pending final : public PendingPrefill {
   public:
    explicit Pending(CancelOnlyPrefiller* owner) : owner_(owner) {}
    absl::StatusOr<PrefillOutcome> Wait() override {
      owner_->cancelled_.WaitForNotification();
      return absl::CancelledError("the prefill call was cancelled");
    }
    void Cancel() override {
      if (!owner_->cancelled_.HasBeenNotified()) owner_->cancelled_.Notify();
    }

   private:
    CancelOnlyPrefiller* owner_;
  };
  absl::StatusOr<PrefillOutcome> Prefill(absl::Span<const PrefillPrompt>, absl::Time,
                                         const FirstTokens&) override {
    return absl::UnavailableError("not this way");
  }
  std::unique_ptr<PendingPrefill> Start(std::vector<PrefillPrompt>, absl::Time,
                                        FirstTokens) override {
    started_.Notify();
    return std::make_unique<Pending>(this);
  }
  void Abandon(const PrefillOutcome&) override {}

  absl::Notification started_, cancelled_;
};

// Cancelling a call cancels the Prefill call it started: the call ends
// CANCELLED without waiting for prefill.
TEST_F(DecodeStageTest, CancellingACallCancelsItsPrefillCall) {
  CancelOnlyPrefiller prefill;
  DecodeStage stage(tokenizer_.get(), scheduler_.get(), &prefill, store_.get(), &workers_,
                    DecodeStageOptions(), nullptr);
  GenerateParams params;
  params.prompt_ids = {1, 2, 3, 4, 5, 6, 7, 8, 9};
  params.max_new_tokens = 4;
  auto events = std::make_shared<RecordingEvents>();
  auto call = stage.Start(params, absl::InfiniteFuture(), events);
  prefill.started_.WaitForNotification();
  stage.Cancel(call);
  ASSERT_TRUE(events->done_.WaitForNotificationWithTimeout(absl::Seconds(30)))
      << "the call waited for its prefill";
  EXPECT_TRUE(prefill.cancelled_.HasBeenNotified());
  EXPECT_EQ(events->status_.code(), absl::StatusCode::kCancelled) << events->status_;
}

// Calls beyond the slots and the queue are refused at once, not parked in
// the worker pool; a text prompt longer than any slot is refused before it
// is tokenized.
TEST_F(DecodeStageTest, AdmissionIsBoundedBySlotsAndQueue) {
  BatchSchedulerOptions one;
  one.max_batch = 1;
  one.max_queue = 0;
  auto scheduler_owned = BatchScheduler::Create(model_.get(), one).value();
  BatchScheduler& scheduler = *scheduler_owned;
  DecodeStage stage(tokenizer_.get(), &scheduler, nullptr, nullptr, &workers_, DecodeStageOptions(),
                    nullptr);
  GenerateParams params;
  params.prompt_ids = {1, 2, 3};
  params.max_new_tokens = 60;
  params.stop_at_end_of_text = false;
  auto running = std::make_shared<RecordingEvents>();
  stage.Start(params, absl::InfiniteFuture(), running);
  auto refused = std::make_shared<RecordingEvents>();
  stage.Start(params, absl::InfiniteFuture(), refused);
  ASSERT_TRUE(refused->done_.HasBeenNotified());  // at once
  EXPECT_EQ(refused->status_.code(), absl::StatusCode::kResourceExhausted);
  ASSERT_TRUE(running->done_.WaitForNotificationWithTimeout(absl::Seconds(60)));
  EXPECT_TRUE(running->status_.ok()) << running->status_;
  auto later = std::make_shared<RecordingEvents>();
  params.max_new_tokens = 2;
  stage.Start(params, absl::InfiniteFuture(), later);
  ASSERT_TRUE(later->done_.WaitForNotificationWithTimeout(absl::Seconds(60)));
  EXPECT_TRUE(later->status_.ok()) << later->status_;

  GenerateParams huge;
  huge.prompt.assign(scheduler.capacity() * tokenizer_->max_token_bytes() + 1, 'a');
  auto too_long = std::make_shared<RecordingEvents>();
  stage.Start(huge, absl::InfiniteFuture(), too_long);
  ASSERT_TRUE(too_long->done_.WaitForNotificationWithTimeout(absl::Seconds(60)));
  EXPECT_EQ(too_long->status_.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(too_long->status_.message().find("bytes"), std::string::npos);
}

// Admission counts tokens of work, not calls: the 17 completions of
// n = 16 x 1000 tokens filled all 272 places; here a budget of 100 tokens
// takes one call of 3 + 60, refuses a second, and still takes a small one.
TEST_F(DecodeStageTest, AdmissionCountsTokensOfWork) {
  BatchSchedulerOptions four;
  four.max_batch = 4;
  four.max_queue = 16;
  auto scheduler_owned = BatchScheduler::Create(model_.get(), four).value();
  BatchScheduler& scheduler = *scheduler_owned;
  DecodeStageOptions options;
  options.max_tokens_in_flight = 100;
  options.max_tokens_in_flight_per_caller = 100;  // the total alone: one caller here
  DecodeStage stage(tokenizer_.get(), &scheduler, nullptr, nullptr, &workers_, options, nullptr);
  GenerateParams big;
  big.prompt_ids = {1, 2, 3};
  big.max_new_tokens = 60;
  big.stop_at_end_of_text = false;
  auto running = std::make_shared<RecordingEvents>();
  stage.Start(big, absl::InfiniteFuture(), running);
  auto refused = std::make_shared<RecordingEvents>();
  stage.Start(big, absl::InfiniteFuture(), refused);
  ASSERT_TRUE(refused->done_.HasBeenNotified());  // at once
  EXPECT_EQ(refused->status_.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(refused->status_.message().find("tokens of work"), std::string::npos)
      << refused->status_;
  GenerateParams small = big;
  small.max_new_tokens = 2;
  auto taken = std::make_shared<RecordingEvents>();
  stage.Start(small, absl::InfiniteFuture(), taken);
  ASSERT_TRUE(taken->done_.WaitForNotificationWithTimeout(absl::Seconds(60)));
  EXPECT_TRUE(taken->status_.ok()) << taken->status_;
  ASSERT_TRUE(running->done_.WaitForNotificationWithTimeout(absl::Seconds(60)));
  EXPECT_TRUE(running->status_.ok()) << running->status_;
  auto again = std::make_shared<RecordingEvents>();  // the budget came back
  stage.Start(big, absl::InfiniteFuture(), again);
  ASSERT_TRUE(again->done_.WaitForNotificationWithTimeout(absl::Seconds(60)));
  EXPECT_TRUE(again->status_.ok()) << again->status_;
}

TEST_F(DecodeStageTest, BadInputEndsTheCallBeforePrefill) {
  auto events = Run({1, 9999}, 4);
  EXPECT_EQ(events->status_.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(events->ids_.empty());
  EXPECT_EQ(cache_->Stats().lookups, 0);
}

}  // namespace decode_stage_test
}  // namespace nanoserve

namespace nanoserve {
namespace decode_stage_test {

// A shutdown's grace runs out: EndAll ends the call in flight with its
// status after the tokens made so far (not CANCELLED), frees its lease, and
// a call started after it ends with it at once.
TEST_F(DecodeStageTest, EndAllEndsCallsInFlightWithItsStatus) {
  GenerateParams params;
  params.prompt_ids = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17};
  params.max_new_tokens = 60;  // 17 + 60 of the tiny model's 96 positions
  params.stop_at_end_of_text = false;
  class FirstToken : public RecordingEvents {  // holds the loop at the first token
   public:
    void OnToken(const StreamedToken& token) override {
      RecordingEvents::OnToken(token);
      if (!first.HasBeenNotified()) {
        first.Notify();
        release.WaitForNotification();
      }
    }
    absl::Notification first, release;
  };
  auto running = std::make_shared<FirstToken>();
  stage_->Start(params, absl::InfiniteFuture(), running);
  ASSERT_TRUE(running->first.WaitForNotificationWithTimeout(absl::Seconds(60)));
  const absl::Status shutting_down = absl::UnavailableError("shutting down; retry");
  stage_->EndAll(shutting_down);
  running->release.Notify();
  ASSERT_TRUE(running->done_.WaitForNotificationWithTimeout(absl::Seconds(60)));
  {
    absl::MutexLock lock(&running->mu_);
    EXPECT_EQ(running->status_, shutting_down);
    EXPECT_GE(running->ids_.size(), 1u);
    EXPECT_LT(running->ids_.size(), 60u);
  }
  ExpectNothingPinned();

  auto later = std::make_shared<RecordingEvents>();
  stage_->Start(params, absl::InfiniteFuture(), later);
  ASSERT_TRUE(later->done_.HasBeenNotified());  // at once
  EXPECT_EQ(later->status_, shutting_down);
  EXPECT_TRUE(later->ids_.empty());
}

// Decode's liveness fails while the scheduler loop is stuck on one turn
// (here in a token callback that blocks) and passes again once it moves.
TEST_F(DecodeStageTest, SchedulerLivenessFailsWhileTheLoopIsStuck) {
  EXPECT_TRUE(SchedulerLiveness(*scheduler_, absl::Milliseconds(200)).ok());
  class Blocking : public RecordingEvents {
   public:
    void OnToken(const StreamedToken& token) override {
      RecordingEvents::OnToken(token);
      // The second token: the scheduler's loop emits it (the first may come
      // from prefill, streamed by the stage's worker before submission).
      if (token.index >= 1 && !entered.HasBeenNotified()) {
        entered.Notify();
        release.WaitForNotification();
      }
    }
    absl::Notification entered, release;
  };
  GenerateParams params;
  params.prompt_ids = {1, 2, 3};
  params.max_new_tokens = 3;
  params.stop_at_end_of_text = false;
  auto events = std::make_shared<Blocking>();
  stage_->Start(params, absl::InfiniteFuture(), events);
  ASSERT_TRUE(events->entered.WaitForNotificationWithTimeout(absl::Seconds(60)));
  absl::SleepFor(absl::Milliseconds(300));
  const absl::Status stuck = SchedulerLiveness(*scheduler_, absl::Milliseconds(200));
  EXPECT_EQ(stuck.code(), absl::StatusCode::kUnavailable) << stuck;
  EXPECT_NE(stuck.message().find("wedged"), std::string::npos) << stuck;
  events->release.Notify();
  ASSERT_TRUE(events->done_.WaitForNotificationWithTimeout(absl::Seconds(60)));
  absl::SleepFor(absl::Milliseconds(50));
  EXPECT_TRUE(SchedulerLiveness(*scheduler_, absl::Milliseconds(200)).ok());
}

}  // namespace decode_stage_test
}  // namespace nanoserve
