// Prefill calls batched across callers. PrefillBatcher alone, with a batch
// runner that records its batches: which calls share a batch (arrival
// while one runs, the window, one lease holder, the limits), deadlines and
// shutdown. Then PrefillStage with a tiny model over a PrefixCache: a burst
// sharing a system prompt computes it once, lease holders stay apart, a
// call past its deadline holds nothing, a failing merged batch is retried
// call by call. No assertion depends on timing: calls are lined up with
// gates and by waiting until the batcher holds them.
#include "prefill_service/prefill_batcher.h"

#include <gtest/gtest.h>
#include <torch/types.h>

#include <algorithm>
#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/synchronization/barrier.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "engine/generate.h"
#include "kv_cache/prefix_cache.h"
#include "kv_cache/prefix_store.h"
#include "prefill_service/prefill_stage.h"
#include "tests/test_util/model.h"
#include "tests/test_util/prefix_cache.h"

namespace nanoserve {
namespace prefill_batcher_test {

// A call of `prompts` one-token prompts whose first token names the call.
std::vector<PrefillPrompt> CallPrompts(int id, int prompts = 1, int length = 1) {
  return std::vector<PrefillPrompt>(prompts, PrefillPrompt{std::vector<int>(length, id), {}});
}

// Runs batches by recording them (each call by its id); the first batch
// can be held at a gate until Open().
class RecordingRunner {
 public:
  explicit RecordingRunner(bool gate_first) : gated_(gate_first) {}

  PrefillBatcher::RunBatch Run() {
    return [this](absl::Span<PrefillCall* const> calls) {
      std::vector<int> ids;
      for (PrefillCall* call : calls) {
        ids.push_back(call->prompts[0].tokens[0]);
        PrefillOutcome outcome;
        outcome.batch_calls = static_cast<int64_t>(calls.size());
        call->outcome = outcome;
      }
      bool gate = false;
      {
        absl::MutexLock lock(&mu_);
        batches_.push_back(ids);
        gate = gated_ && batches_.size() == 1;
      }
      if (gate) {
        entered_.Notify();
        open_.WaitForNotification();
      }
    };
  }
  void WaitUntilFirstBatchRuns() { entered_.WaitForNotification(); }
  void Open() { open_.Notify(); }
  std::vector<std::vector<int>> batches() {
    absl::MutexLock lock(&mu_);
    return batches_;
  }

 private:
  const bool gated_;
  absl::Notification entered_;
  absl::Notification open_;
  absl::Mutex mu_;
  std::vector<std::vector<int>> batches_ ABSL_GUARDED_BY(mu_);
};

// A call submitted from its own thread.
class AsyncCall {
 public:
  AsyncCall(PrefillBatcher* batcher, std::vector<PrefillPrompt> prompts, std::string holder = "",
            absl::Time deadline = absl::InfiniteFuture())
      : prompts_(std::move(prompts)), holder_(std::move(holder)) {
    thread_ = std::thread([=] { outcome_ = batcher->Submit(prompts_, holder_, deadline); });
  }
  const absl::StatusOr<PrefillOutcome>& Join() {
    if (thread_.joinable()) thread_.join();
    return outcome_;
  }
  ~AsyncCall() { Join(); }

 private:
  const std::vector<PrefillPrompt> prompts_;
  const std::string holder_;
  absl::StatusOr<PrefillOutcome> outcome_ = absl::UnknownError("not returned");
  std::thread thread_;
};

// Waits until `done()` holds; false if it still does not after a minute
// (a broken batcher, not a slow machine).
bool WaitUntil(const std::function<bool()>& done) {
  const absl::Time give_up = absl::Now() + absl::Minutes(1);
  while (!done()) {
    if (absl::Now() > give_up) return false;
    absl::SleepFor(absl::Milliseconds(1));
  }
  return true;
}

void WaitUntilWaiting(const PrefillBatcher& batcher, int64_t calls) {
  EXPECT_TRUE(WaitUntil([&] { return batcher.waiting_calls() >= calls; }))
      << "never " << calls << " calls waiting";
}

TEST(PrefillBatcherTest, CallsArrivingWhileABatchRunsShareTheNext) {
  RecordingRunner runner(/*gate_first=*/true);
  PrefillBatcher batcher({}, runner.Run());  // no window
  AsyncCall a(&batcher, CallPrompts(1));
  runner.WaitUntilFirstBatchRuns();
  std::vector<std::unique_ptr<AsyncCall>> later;
  for (int id : {2, 3, 4}) {
    later.push_back(std::make_unique<AsyncCall>(&batcher, CallPrompts(id)));
    WaitUntilWaiting(batcher, static_cast<int64_t>(later.size()));  // keeps the order
  }
  runner.Open();
  ASSERT_TRUE(a.Join().ok());
  EXPECT_EQ(a.Join()->batch_calls, 1);
  for (auto& call : later) {
    ASSERT_TRUE(call->Join().ok()) << call->Join().status();
    EXPECT_EQ(call->Join()->batch_calls, 3);
  }
  EXPECT_EQ(runner.batches(), (std::vector<std::vector<int>>{{1}, {2, 3, 4}}));
}

// Without a window, a call alone at an idle batcher runs on its caller's
// thread (no handoff to the runner and back); calls that arrive while it
// runs wait for it and go to the runner; never two batches at once.
TEST(PrefillBatcherTest, ACallAloneAtAnIdleBatcherRunsOnItsCallersThread) {
  absl::Mutex mu;
  std::vector<std::pair<int, std::thread::id>> ran;  // call id, thread
  std::atomic<int> running{0}, most{0};
  absl::Notification entered, open;
  PrefillBatcher batcher({}, [&](absl::Span<PrefillCall* const> calls) {
    const int now = ++running;
    most = std::max(most.load(), now);
    const int id = calls[0]->prompts[0].tokens[0];
    {
      absl::MutexLock lock(&mu);
      for (PrefillCall* call : calls) {
        ran.emplace_back(call->prompts[0].tokens[0], std::this_thread::get_id());
        call->outcome = PrefillOutcome{};
      }
    }
    if (id == 2) {
      entered.Notify();
      open.WaitForNotification();
    }
    --running;
  });
  ASSERT_TRUE(batcher.Submit(CallPrompts(1), "", absl::InfiniteFuture()).ok());
  std::thread::id second_caller;
  std::thread second([&] {
    second_caller = std::this_thread::get_id();
    EXPECT_TRUE(batcher.Submit(CallPrompts(2), "", absl::InfiniteFuture()).ok());
  });
  entered.WaitForNotification();
  AsyncCall third(&batcher, CallPrompts(3));
  WaitUntilWaiting(batcher, 1);
  open.Notify();
  second.join();
  ASSERT_TRUE(third.Join().ok());
  absl::MutexLock lock(&mu);
  ASSERT_EQ(ran.size(), 3u);
  EXPECT_EQ(ran[0], std::make_pair(1, std::this_thread::get_id()));
  EXPECT_EQ(ran[1], std::make_pair(2, second_caller));
  EXPECT_EQ(ran[2].first, 3);
  EXPECT_NE(ran[2].second, second_caller);  // the runner's
  EXPECT_NE(ran[2].second, std::this_thread::get_id());
  EXPECT_EQ(most.load(), 1);
}

// A call reaching an idle batcher past its deadline does not run.
TEST(PrefillBatcherTest, ACallPastItsDeadlineDoesNotRunEvenOnAnIdleBatcher) {
  RecordingRunner runner(/*gate_first=*/false);
  PrefillBatcher batcher({}, runner.Run());
  EXPECT_EQ(batcher.Submit(CallPrompts(1), "", absl::Now() - absl::Seconds(1)).status().code(),
            absl::StatusCode::kDeadlineExceeded);
  EXPECT_TRUE(runner.batches().empty());
}

// With a window, a call reaching an idle batcher (its thread started by a
// first call) waits for others: A stays queued until B fills the batch.
TEST(PrefillBatcherTest, AWindowHoldsTheFirstCallUntilTheBatchIsFull) {
  RecordingRunner runner(/*gate_first=*/false);
  PrefillBatcherOptions options;
  options.window = absl::Minutes(10);  // the batch closes because it is full
  options.max_prompts = 2;
  PrefillBatcher batcher(options, runner.Run());
  ASSERT_TRUE(batcher.Submit(CallPrompts(1, 2), "", absl::InfiniteFuture()).ok());
  AsyncCall a(&batcher, CallPrompts(2));
  WaitUntil([&] { return batcher.waiting_calls() == 1 || runner.batches().size() > 1; });
  EXPECT_EQ(batcher.waiting_calls(), 1) << "the first call did not wait for the window";
  AsyncCall b(&batcher, CallPrompts(3));
  EXPECT_TRUE(a.Join().ok());
  EXPECT_TRUE(b.Join().ok());
  EXPECT_EQ(runner.batches(), (std::vector<std::vector<int>>{{1}, {2, 3}}));
}

// Calls released together by a barrier meet in one batch.
TEST(PrefillBatcherTest, AWindowGathersABurstIntoOneBatch) {
  RecordingRunner runner(/*gate_first=*/false);
  PrefillBatcherOptions options;
  options.window = absl::Minutes(10);
  options.max_prompts = 4;
  PrefillBatcher batcher(options, runner.Run());
  absl::Barrier barrier(4);
  std::vector<std::thread> threads;
  for (int id = 1; id <= 4; ++id) {
    threads.emplace_back([&, id] {
      barrier.Block();
      EXPECT_TRUE(batcher.Submit(CallPrompts(id), "", absl::InfiniteFuture()).ok());
    });
  }
  for (std::thread& t : threads) t.join();
  ASSERT_EQ(runner.batches().size(), 1u);
  EXPECT_EQ(runner.batches()[0].size(), 4u);
}

// Arrival order B(x, 2 prompts), C(y), D(x, 2), E(x) behind a running
// batch, at most 3 prompts a batch: B takes E (D does not fit, C is
// another holder's); then C, the first waiting; then D.
TEST(PrefillBatcherTest, OnlyCallsOfOneHolderWithinTheLimitsShareABatch) {
  RecordingRunner runner(/*gate_first=*/true);
  PrefillBatcherOptions options;
  options.max_prompts = 3;
  PrefillBatcher batcher(options, runner.Run());
  AsyncCall a(&batcher, CallPrompts(1), "x");
  runner.WaitUntilFirstBatchRuns();
  std::vector<std::unique_ptr<AsyncCall>> later;
  const struct {
    int id;
    int prompts;
    const char* holder;
  } kCalls[] = {{2, 2, "x"}, {3, 1, "y"}, {4, 2, "x"}, {5, 1, "x"}};
  for (const auto& c : kCalls) {
    later.push_back(std::make_unique<AsyncCall>(&batcher, CallPrompts(c.id, c.prompts), c.holder));
    WaitUntilWaiting(batcher, static_cast<int64_t>(later.size()));  // keeps the order
  }
  runner.Open();
  for (auto& call : later) EXPECT_TRUE(call->Join().ok());
  EXPECT_EQ(runner.batches(), (std::vector<std::vector<int>>{{1}, {2, 5}, {3}, {4}}));
}

// max_batch_tokens bounds prompts x the longest prompt: B (2 x 10 tokens)
// cannot take C (1 x 20: 3 x 20 rows) but takes D (1 x 10: 3 x 10).
TEST(PrefillBatcherTest, RowsBoundABatch) {
  RecordingRunner runner(/*gate_first=*/true);
  PrefillBatcherOptions options;
  options.max_batch_tokens = 40;
  PrefillBatcher batcher(options, runner.Run());
  AsyncCall a(&batcher, CallPrompts(1, 1, 10));
  runner.WaitUntilFirstBatchRuns();
  AsyncCall b(&batcher, CallPrompts(2, 2, 10));
  WaitUntilWaiting(batcher, 1);
  AsyncCall c(&batcher, CallPrompts(3, 1, 20));
  WaitUntilWaiting(batcher, 2);
  AsyncCall d(&batcher, CallPrompts(4, 1, 10));
  WaitUntilWaiting(batcher, 3);
  runner.Open();
  for (AsyncCall* call : {&a, &b, &c, &d}) EXPECT_TRUE(call->Join().ok());
  EXPECT_EQ(runner.batches(), (std::vector<std::vector<int>>{{1}, {2, 4}, {3}}));
}

TEST(PrefillBatcherTest, ACallWhoseDeadlinePassesWhileItWaitsNeverRuns) {
  RecordingRunner runner(/*gate_first=*/true);
  PrefillBatcher batcher({}, runner.Run());
  AsyncCall a(&batcher, CallPrompts(1));
  runner.WaitUntilFirstBatchRuns();
  auto late = batcher.Submit(CallPrompts(2), "", absl::Now() + absl::Milliseconds(20));
  EXPECT_EQ(late.status().code(), absl::StatusCode::kDeadlineExceeded) << late.status();
  EXPECT_EQ(batcher.waiting_calls(), 0);
  runner.Open();
  EXPECT_TRUE(a.Join().ok());
  // A deadline already past: refused without running either.
  EXPECT_EQ(batcher.Submit(CallPrompts(3), "", absl::Now() - absl::Seconds(1)).status().code(),
            absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(runner.batches(), (std::vector<std::vector<int>>{{1}}));
}

// Destroying the batcher while a batch runs and a call waits: the waiting
// call ends UNAVAILABLE at once, the running one gets its outcome, and
// destruction returns once both callers have left.
TEST(PrefillBatcherTest, DestructionEndsWaitingCallsAndFinishesTheRunningBatch) {
  RecordingRunner runner(/*gate_first=*/true);
  auto batcher = std::make_unique<PrefillBatcher>(PrefillBatcherOptions(), runner.Run());
  PrefillBatcher* raw = batcher.get();
  AsyncCall a(raw, CallPrompts(1));
  runner.WaitUntilFirstBatchRuns();
  AsyncCall b(raw, CallPrompts(2));
  WaitUntilWaiting(*raw, 1);
  std::thread destroy([&] { batcher.reset(); });
  // Returns while the first batch still runs (the gate is closed).
  EXPECT_EQ(b.Join().status().code(), absl::StatusCode::kUnavailable) << b.Join().status();
  runner.Open();
  destroy.join();
  EXPECT_TRUE(a.Join().ok()) << a.Join().status();
  EXPECT_EQ(runner.batches(), (std::vector<std::vector<int>>{{1}}));
}

TEST(PrefillBatcherTest, CallsAfterShutdownAreRefused) {
  RecordingRunner runner(/*gate_first=*/false);
  PrefillBatcher batcher({}, runner.Run());
  EXPECT_TRUE(batcher.Submit(CallPrompts(1), "", absl::InfiniteFuture()).ok());
  batcher.Shutdown();
  batcher.Shutdown();  // idempotent
  EXPECT_EQ(batcher.Submit(CallPrompts(2), "", absl::InfiniteFuture()).status().code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(runner.batches(), (std::vector<std::vector<int>>{{1}}));
}

// Three calls: 2 prompts (20, 30 tokens; 16 and 24 reused), 1 prompt (10, none
// reused), 1 prompt (40, 16 reused); the batch computed 16 shared tokens
// beyond the suffixes (44). Shared work goes by reuse: 16 x 40/56 and
// 16 x 16/56, the remainder to the call that reused most.
TEST(SplitBatchOutcomeTest, SuffixesAreOwnAndSharedPrefixesGoByReuse) {
  PrefillOutcome batch;
  batch.prompts = {{1, 11, 16, 16}, {2, 12, 24, 24}, {3, 13, 8, 0}, {4, 14, 40, 16}};
  batch.computed_tokens = 44 + 16;
  batch.store_ms = 1.5;
  batch.batch_prompts = 4;
  const std::vector<int64_t> per_call = {2, 1, 1};
  const std::vector<int64_t> lengths = {20, 30, 10, 40};
  std::vector<PrefillOutcome> calls = SplitBatchOutcome(batch, per_call, lengths);
  ASSERT_EQ(calls.size(), 3u);
  EXPECT_EQ(calls[0].computed_tokens, 10 + 12);
  EXPECT_EQ(calls[1].computed_tokens, 10);  // reused nothing: no shared work
  EXPECT_EQ(calls[2].computed_tokens, 24 + 4);
  ASSERT_EQ(calls[0].prompts.size(), 2u);
  EXPECT_EQ(calls[0].prompts[1].lease_id, 12u);
  EXPECT_EQ(calls[2].prompts[0].first_token, 4);
  for (const PrefillOutcome& call : calls) {
    EXPECT_EQ(call.batch_calls, 3);
    EXPECT_EQ(call.batch_prompts, 4);
    EXPECT_EQ(call.store_ms, 1.5);
  }
}

constexpr int64_t kPageSize = 8;

std::vector<int> Tokens(int length, int salt) {
  std::vector<int> p;
  for (int i = 0; i < length; ++i) p.push_back((i * 31 + salt * 97 + 3) % 512);
  return p;
}

std::vector<int> Concat(std::vector<int> a, const std::vector<int>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// A LocalPrefixStore whose MatchPrefix can be held at a gate (so that a batch
// stays running), and throws on a prompt that starts with a poison token
// (so that any batch holding it fails as a whole).
class TestStore : public LocalPrefixStore {
 public:
  static constexpr int kPoison = 511;
  using LocalPrefixStore::LocalPrefixStore;

  void CloseGate() { gated_ = true; }
  void WaitUntilAtGate() { at_gate_.WaitForNotification(); }
  void OpenGate() { open_.Notify(); }

  absl::StatusOr<Match> MatchPrefix(absl::Span<const int32_t> tokens,
                                    absl::string_view cache_salt) override {
    TORCH_CHECK(tokens.empty() || tokens[0] != kPoison, "a poisoned prompt");
    if (gated_) {
      if (!at_gate_.HasBeenNotified()) at_gate_.Notify();
      open_.WaitForNotification();
    }
    return LocalPrefixStore::MatchPrefix(tokens, cache_salt);
  }

 private:
  std::atomic<bool> gated_{false};
  absl::Notification at_gate_;
  absl::Notification open_;
};

class PrefillStageBatchingTest : public ::testing::Test {
 protected:
  PrefillStageBatchingTest() : model_(testing::TinyModel()) {
    cache_ = testing::ModelCache(*model_, kPageSize, 96);
    store_ = std::make_unique<TestStore>(cache_.get());
  }

  int FirstToken(const std::vector<int>& prompt) {
    GenerateOptions options;
    options.max_new_tokens = 1;
    return Generator(model_.get()).Generate({prompt}, options).value().sequences[0].output_ids[0];
  }

  // Stage options under which `prompts` calls' worth of prompts close a batch
  // at once, whatever the (long) window.
  static PrefillStageOptions FullAt(int64_t prompts) {
    PrefillStageOptions options;
    options.max_prompts = prompts;
    options.batch_window = absl::Minutes(10);
    return options;
  }

  // Runs calls[i] (prompts, lease holder) from threads released together.
  std::vector<absl::StatusOr<PrefillOutcome>> RunTogether(
      PrefillStage& stage,
      const std::vector<std::pair<std::vector<PrefillPrompt>, std::string>>& calls) {
    std::vector<absl::StatusOr<PrefillOutcome>> outcomes(calls.size(),
                                                         absl::UnknownError("not run"));
    absl::Barrier barrier(static_cast<int>(calls.size()));
    std::vector<std::thread> threads;
    for (size_t i = 0; i < calls.size(); ++i) {
      threads.emplace_back([&, i] {
        barrier.Block();
        outcomes[i] = stage.Prefill(calls[i].first, absl::InfiniteFuture(), calls[i].second);
      });
    }
    for (std::thread& t : threads) t.join();
    return outcomes;
  }

  std::unique_ptr<Gpt2Model> model_;
  std::unique_ptr<PrefixCache> cache_;
  std::unique_ptr<TestStore> store_;
};

// Six calls at once, each a 48-token system prompt (6 pages) and 5 tokens of
// its own: one batch, the system prompt computed once (48 + 6 x 5 tokens,
// not 6 x 53), each call charged its 5 tokens and a sixth of the 48, and
// each first token the one the prompt gets alone.
TEST_F(PrefillStageBatchingTest, ABurstSharingASystemPromptComputesItOnce) {
  constexpr int kCalls = 6;
  PrefillStage stage(model_.get(), store_.get(), FullAt(kCalls), nullptr);
  const std::vector<int> system = Tokens(48, 1);
  std::vector<std::pair<std::vector<PrefillPrompt>, std::string>> calls;
  for (int i = 0; i < kCalls; ++i) {
    calls.push_back({{{Concat(system, Tokens(5, 10 + i)), {}}}, ""});
  }
  const auto outcomes = RunTogether(stage, calls);
  int64_t computed = 0;
  for (int i = 0; i < kCalls; ++i) {
    ASSERT_TRUE(outcomes[i].ok()) << outcomes[i].status();
    const PrefillOutcome& o = *outcomes[i];
    EXPECT_EQ(o.batch_calls, kCalls);
    EXPECT_EQ(o.batch_prompts, kCalls);
    EXPECT_EQ(o.computed_tokens, 5 + 48 / kCalls) << i;
    computed += o.computed_tokens;
    ASSERT_EQ(o.prompts.size(), 1u);
    EXPECT_EQ(o.prompts[0].cached_tokens, 48);
    EXPECT_NE(o.prompts[0].lease_id, PrefixStore::kNoLease);
    const std::vector<int>& prompt = calls[i].first[0].tokens;
    testing::ExpectSameGreedy(*model_, prompt, {FirstToken(prompt)}, {o.prompts[0].first_token});
    stage.Abandon(o);
  }
  EXPECT_EQ(computed, 48 + kCalls * 5);
  EXPECT_EQ(cache_->Stats().active_leases, 0);
  EXPECT_TRUE(cache_->CheckInvariants().ok()) << cache_->CheckInvariants();
}

// Two holders' calls at once (x: one prompt each, y: two each; a batch of
// six prompts closes the window): x's calls share one batch, y's another.
TEST_F(PrefillStageBatchingTest, CallsOfDifferentLeaseHoldersAreNotMerged) {
  PrefillStage stage(model_.get(), store_.get(), FullAt(6), nullptr);
  const std::vector<int> system = Tokens(24, 2);
  auto prompts = [&](int n, int salt) {
    std::vector<PrefillPrompt> p;
    for (int i = 0; i < n; ++i) p.push_back({Concat(system, Tokens(3, salt + i)), {}});
    return p;
  };
  const auto outcomes = RunTogether(
      stage,
      {{prompts(1, 10), "x"}, {prompts(2, 20), "y"}, {prompts(1, 30), "x"}, {prompts(2, 40), "y"}});
  for (size_t i = 0; i < outcomes.size(); ++i) {
    ASSERT_TRUE(outcomes[i].ok()) << outcomes[i].status();
    EXPECT_EQ(outcomes[i]->batch_calls, 2) << i;
    EXPECT_EQ(outcomes[i]->batch_prompts, i % 2 == 0 ? 2 : 4) << i;  // x's or y's alone
    stage.Abandon(*outcomes[i]);
  }
  EXPECT_EQ(cache_->Stats().active_leases, 0);
}

// A call waits behind a batch held in the store; its deadline passes while
// it waits: DEADLINE_EXCEEDED, never run. The held batch's own deadline
// passes during its run: its leases are released. Nothing stays pinned.
TEST_F(PrefillStageBatchingTest, DeadlinesWhileWaitingAndWhileRunningHoldNothing) {
  PrefillStageOptions options;
  options.batch_window = absl::ZeroDuration();
  PrefillStage stage(model_.get(), store_.get(), options, nullptr);
  store_->CloseGate();
  const absl::Time running_deadline = absl::Now() + absl::Seconds(2);
  absl::StatusOr<PrefillOutcome> running = absl::UnknownError("not run");
  std::thread first([&] { running = stage.Prefill({{Tokens(30, 1), {}}}, running_deadline); });
  store_->WaitUntilAtGate();
  auto waiting = stage.Prefill({{Tokens(30, 2), {}}}, absl::Now() + absl::Milliseconds(20));
  EXPECT_EQ(waiting.status().code(), absl::StatusCode::kDeadlineExceeded) << waiting.status();
  while (absl::Now() < running_deadline) absl::SleepFor(absl::Milliseconds(10));
  store_->OpenGate();
  first.join();
  EXPECT_EQ(running.status().code(), absl::StatusCode::kDeadlineExceeded) << running.status();
  EXPECT_EQ(cache_->Stats().active_leases, 0);
  EXPECT_EQ(cache_->Stats().pages_pinned, 0);
  EXPECT_EQ(cache_->Stats().pages_cached, 3);  // the first prompt's, stored before it ended
}

// A batch of three calls, one of them poisoned, fails as a whole; each call
// then runs alone: the two good ones succeed, only the poisoned one fails.
TEST_F(PrefillStageBatchingTest, AFailingMergedBatchIsRetriedCallByCall) {
  MetricsRegistry metrics;
  PrefillStage stage(model_.get(), store_.get(), FullAt(3), &metrics);
  std::vector<int> poisoned = Tokens(20, 3);
  poisoned[0] = TestStore::kPoison;
  const auto outcomes = RunTogether(
      stage, {{{{Tokens(20, 1), {}}}, ""}, {{{poisoned, {}}}, ""}, {{{Tokens(20, 2), {}}}, ""}});
  EXPECT_EQ(outcomes[1].status().code(), absl::StatusCode::kInternal) << outcomes[1].status();
  for (size_t i : {0u, 2u}) {
    ASSERT_TRUE(outcomes[i].ok()) << i << ": " << outcomes[i].status();
    EXPECT_EQ(outcomes[i]->batch_calls, 1);  // ran alone
    EXPECT_EQ(outcomes[i]->computed_tokens, 20);
    stage.Abandon(*outcomes[i]);
  }
  const std::string page = metrics.Render();
  EXPECT_NE(page.find("nanoserve_prefill_batch_retries_total 1\n"), std::string::npos) << page;
  EXPECT_NE(page.find("nanoserve_prefill_batch_calls_sum 3\n"), std::string::npos) << page;
  EXPECT_EQ(cache_->Stats().active_leases, 0);
  EXPECT_TRUE(cache_->CheckInvariants().ok()) << cache_->CheckInvariants();
}

}  // namespace prefill_batcher_test
}  // namespace nanoserve
