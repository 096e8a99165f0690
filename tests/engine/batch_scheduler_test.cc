// The continuous-batching scheduler against the offline Generator: same
// greedy tokens whatever joins or leaves the batch, K/V handed in from
// elsewhere, cancellation, queueing, bad requests.
#include "engine/batch_scheduler.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <limits>
#include <memory>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "engine/generate.h"
#include "engine/prefill.h"
#include "tests/test_util/model.h"

namespace nanoserve {
namespace batch_scheduler_test {

using ::nanoserve::testing::ExpectSameGreedy;
using ::nanoserve::testing::TinyModel;

// Collects one request's callbacks.
struct Outcome {
  absl::Mutex mu;
  std::vector<int> streamed;
  absl::Status status;
  BatchResult result;
  absl::Notification done;
};

BatchRequest MakeRequest(const std::vector<int>& prompt, int64_t max_new, Outcome* out) {
  BatchRequest r;
  r.prompt = prompt;
  r.max_new_tokens = max_new;
  r.stop_at_end_of_text = false;
  r.on_token = [out](int t) {
    absl::MutexLock lock(&out->mu);
    out->streamed.push_back(t);
  };
  r.on_done = [out](const absl::Status& s, const BatchResult& res) {
    out->status = s;
    out->result = res;
    out->done.Notify();
  };
  return r;
}

std::vector<int> Offline(const Gpt2Model& model, const std::vector<int>& prompt, int64_t max_new) {
  Generator generator(&model);
  GenerateOptions options;
  options.max_new_tokens = max_new;
  options.stop_at_end_of_text = false;
  return generator.Generate({prompt}, options).value().sequences[0].output_ids;
}

std::vector<int> Prompt(int length, int salt) {
  std::vector<int> p;
  for (int i = 0; i < length; ++i) p.push_back((i * 37 + salt * 101 + 5) % 512);
  return p;
}

TEST(BatchSchedulerTest, StaggeredRequestsMatchTheOfflineEngine) {
  auto model = TinyModel();
  BatchSchedulerOptions options;
  options.max_batch = 3;  // fewer slots than requests: some wait, then join
  auto scheduler_owned = BatchScheduler::Create(model.get(), options).value();
  BatchScheduler& scheduler = *scheduler_owned;
  const std::vector<std::vector<int>> prompts = {Prompt(5, 1), Prompt(17, 2), Prompt(1, 3),
                                                 Prompt(30, 4), Prompt(9, 5)};
  const std::vector<int64_t> max_new = {12, 4, 20, 7, 15};
  std::vector<std::unique_ptr<Outcome>> outcomes;
  for (size_t i = 0; i < prompts.size(); ++i) {
    outcomes.push_back(std::make_unique<Outcome>());
    ASSERT_TRUE(scheduler.Submit(MakeRequest(prompts[i], max_new[i], outcomes[i].get())).ok());
    if (i == 1) outcomes[0]->done.WaitForNotificationWithTimeout(absl::Milliseconds(1));
  }
  for (size_t i = 0; i < prompts.size(); ++i) {
    ASSERT_TRUE(outcomes[i]->done.WaitForNotificationWithTimeout(absl::Seconds(60)));
    ASSERT_TRUE(outcomes[i]->status.ok()) << outcomes[i]->status;
    EXPECT_EQ(outcomes[i]->result.finish_reason, "length");
    EXPECT_EQ(outcomes[i]->result.output_ids, outcomes[i]->streamed);
    EXPECT_EQ(outcomes[i]->result.computed_prompt_tokens, static_cast<int64_t>(prompts[i].size()));
    ExpectSameGreedy(*model, prompts[i], Offline(*model, prompts[i], max_new[i]),
                     outcomes[i]->result.output_ids);
  }
  EXPECT_EQ(scheduler.active(), 0);
  EXPECT_EQ(scheduler.queued(), 0);
}

// Requests that arrive together are prefilled together: one batched pass
// for equal lengths (consecutive slots), and the tokens of each equal what
// it gets alone.
TEST(BatchSchedulerTest, ABurstIsPrefilledInOneBatch) {
  auto model = TinyModel();
  BatchSchedulerOptions options;
  options.max_batch = 8;
  auto scheduler_owned = BatchScheduler::Create(model.get(), options).value();
  BatchScheduler& scheduler = *scheduler_owned;
  for (bool equal_lengths : {true, false}) {
    std::vector<std::unique_ptr<Outcome>> outcomes;
    std::vector<BatchRequest> burst;
    std::vector<std::vector<int>> prompts;
    for (int i = 0; i < 6; ++i) {
      prompts.push_back(Prompt(equal_lengths ? 11 : 3 + 4 * i, 10 + i));
      outcomes.push_back(std::make_unique<Outcome>());
      burst.push_back(MakeRequest(prompts.back(), 6, outcomes.back().get()));
    }
    const int64_t prefills_before = scheduler.prefills();
    auto ids = scheduler.SubmitBatch(std::move(burst));
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_EQ(ids->size(), 6u);
    for (size_t i = 0; i < outcomes.size(); ++i) {
      ASSERT_TRUE(outcomes[i]->done.WaitForNotificationWithTimeout(absl::Seconds(60)));
      ASSERT_TRUE(outcomes[i]->status.ok()) << outcomes[i]->status;
      ExpectSameGreedy(*model, prompts[i], Offline(*model, prompts[i], 6),
                       outcomes[i]->result.output_ids);
    }
    // One PrefillBatch over the six consecutive slots (it runs rows of
    // unequal length in passes of their own within it).
    EXPECT_EQ(scheduler.prefills() - prefills_before, 1) << "equal lengths " << equal_lengths;
  }
  // All or nothing: one bad request refuses the burst.
  Outcome good, bad;
  std::vector<BatchRequest> mixed;
  mixed.push_back(MakeRequest(Prompt(4, 1), 2, &good));
  mixed.push_back(MakeRequest({}, 2, &bad));
  auto refused = scheduler.SubmitBatch(std::move(mixed));
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(refused.status().message().find("request 1"), std::string::npos);
}

// With prefill_chunk, a long prompt is computed a chunk per turn between
// decode steps: a stream already running keeps getting tokens meanwhile,
// and both get the tokens they get alone.
TEST(BatchSchedulerTest, ChunkedPrefillKeepsRunningStreamsGoing) {
  auto model = TinyModel();
  BatchSchedulerOptions options;
  options.max_batch = 4;
  options.prefill_chunk = 8;
  auto scheduler_owned = BatchScheduler::Create(model.get(), options).value();
  BatchScheduler& scheduler = *scheduler_owned;
  const std::vector<int> running = Prompt(5, 1), long_prompt = Prompt(64, 2);
  Outcome a, b;
  ASSERT_TRUE(scheduler.Submit(MakeRequest(running, 40, &a)).ok());
  for (int i = 0; i < 2000; ++i) {  // until a streams
    {
      absl::MutexLock lock(&a.mu);
      if (!a.streamed.empty()) break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  size_t a_at_submit = 0;
  {
    absl::MutexLock lock(&a.mu);
    a_at_submit = a.streamed.size();
  }
  ASSERT_GT(a_at_submit, 0u);
  size_t a_at_b_first = 0;
  BatchRequest rb = MakeRequest(long_prompt, 5, &b);
  rb.on_token = [&](int t) {
    absl::MutexLock lock(&b.mu);
    if (b.streamed.empty()) {
      absl::MutexLock other(&a.mu);
      a_at_b_first = a.streamed.size();
    }
    b.streamed.push_back(t);
  };
  ASSERT_TRUE(scheduler.Submit(std::move(rb)).ok());
  ASSERT_TRUE(b.done.WaitForNotificationWithTimeout(absl::Seconds(60)));
  ASSERT_TRUE(a.done.WaitForNotificationWithTimeout(absl::Seconds(60)));
  ASSERT_TRUE(a.status.ok() && b.status.ok()) << a.status << " " << b.status;
  // 64 tokens in chunks of 8: eight turns, each with a decode step of a
  // (unless a finished first).
  EXPECT_GE(a_at_b_first, std::min<size_t>(a_at_submit + 7, 40)) << "a stalled during b's prefill";
  EXPECT_EQ(b.result.computed_prompt_tokens, 64);
  ExpectSameGreedy(*model, running, Offline(*model, running, 40), a.result.output_ids);
  ExpectSameGreedy(*model, long_prompt, Offline(*model, long_prompt, 5), b.result.output_ids);
}

// prefill_chunk is a token budget per turn over all prefilling rows (not a
// chunk per row): three 30-token prompts arriving together with a budget of
// 8 never put more than 8 prompt tokens into one turn, and the oldest is
// served first.
TEST(BatchSchedulerTest, PrefillChunkIsATokenBudgetPerTurnOldestFirst) {
  auto model = TinyModel();
  BatchSchedulerOptions options;
  options.max_batch = 4;
  options.prefill_chunk = 8;
  auto scheduler_owned = BatchScheduler::Create(model.get(), options).value();
  BatchScheduler& scheduler = *scheduler_owned;
  std::vector<std::vector<int>> prompts;
  std::vector<std::unique_ptr<Outcome>> outcomes;
  std::vector<BatchRequest> burst;
  absl::Mutex order_mu;
  std::vector<int> first_token_order;  // request index, in the order of first tokens
  for (int i = 0; i < 3; ++i) {
    prompts.push_back(Prompt(30, 40 + i));
    outcomes.push_back(std::make_unique<Outcome>());
    BatchRequest r = MakeRequest(prompts.back(), 4, outcomes.back().get());
    Outcome* out = outcomes.back().get();
    r.on_token = [&, out, i](int t) {
      absl::MutexLock lock(&out->mu);
      if (out->streamed.empty()) {
        absl::MutexLock order(&order_mu);
        first_token_order.push_back(i);
      }
      out->streamed.push_back(t);
    };
    burst.push_back(std::move(r));
  }
  ASSERT_TRUE(scheduler.SubmitBatch(std::move(burst)).ok());
  for (size_t i = 0; i < outcomes.size(); ++i) {
    ASSERT_TRUE(outcomes[i]->done.WaitForNotificationWithTimeout(absl::Seconds(60)));
    ASSERT_TRUE(outcomes[i]->status.ok()) << outcomes[i]->status;
    EXPECT_EQ(outcomes[i]->result.computed_prompt_tokens, 30);
    ExpectSameGreedy(*model, prompts[i], Offline(*model, prompts[i], 4),
                     outcomes[i]->result.output_ids);
  }
  EXPECT_EQ(scheduler.max_turn_prompt_tokens(), 8);
  absl::MutexLock order(&order_mu);
  EXPECT_EQ(first_token_order, (std::vector<int>{0, 1, 2}));
}

// max_batch bounds the rows, the pool the tokens: with pages for two
// sequences at a time, eight requests take turns (each reserves the pages
// of its whole sequence), one that needs the whole pool runs alone, and one
// that needs more than the pool is refused up front.
TEST(BatchSchedulerTest, ThePagePoolBoundsTokensNotSlots) {
  auto model = TinyModel();
  BatchSchedulerOptions options;
  options.max_batch = 8;
  options.page_size = 16;
  options.pool_tokens = 64;  // four pages
  auto scheduler_owned = BatchScheduler::Create(model.get(), options).value();
  BatchScheduler& scheduler = *scheduler_owned;
  EXPECT_EQ(scheduler.pool_pages(), 4);
  std::vector<std::vector<int>> prompts;
  std::vector<int64_t> max_new;
  for (int i = 0; i < 8; ++i) {
    prompts.push_back(Prompt(10 + i, i));  // + 12 new tokens: two pages each
    max_new.push_back(12);
  }
  prompts.push_back(Prompt(50, 9));  // + 14: the whole pool
  max_new.push_back(14);
  std::vector<std::unique_ptr<Outcome>> outcomes;
  for (size_t i = 0; i < prompts.size(); ++i) {
    outcomes.push_back(std::make_unique<Outcome>());
    ASSERT_TRUE(scheduler.Submit(MakeRequest(prompts[i], max_new[i], outcomes[i].get())).ok());
  }
  for (size_t i = 0; i < prompts.size(); ++i) {
    ASSERT_TRUE(outcomes[i]->done.WaitForNotificationWithTimeout(absl::Seconds(60)));
    ASSERT_TRUE(outcomes[i]->status.ok()) << i << ": " << outcomes[i]->status;
    ExpectSameGreedy(*model, prompts[i], Offline(*model, prompts[i], max_new[i]),
                     outcomes[i]->result.output_ids);
  }
  Outcome too_long;
  const absl::StatusOr<uint64_t> refused =
      scheduler.Submit(MakeRequest(Prompt(60, 1), 10, &too_long));
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(refused.status().message().find("the pool holds 4"), std::string::npos)
      << refused.status();
}

TEST(BatchSchedulerTest, HandedInKvAndFirstTokenAreUsed) {
  auto model = TinyModel();
  const std::vector<int> prompt = Prompt(21, 7);
  const std::vector<int> expected = Offline(*model, prompt, 10);
  // K/V of the first 16 tokens, computed elsewhere (as the KV store holds it).
  auto other_owned =
      KvCache::Create(model->config(), 1, 64, testing::TestDtype(), testing::TestDevice()).value();
  KvCache& other = *other_owned;
  std::vector<int> head(prompt.begin(), prompt.begin() + 16);
  PrefillRow(*model, other, 0, head, 0);
  auto scheduler_owned = BatchScheduler::Create(model.get(), {}).value();
  BatchScheduler& scheduler = *scheduler_owned;
  // Positions [0, n) of `other` as pages of `page_size` tokens.
  auto pages_of = [&](int64_t n, int64_t page_size) {
    return TokensAsPages(other.ReadRow(0, 0, n).value(), page_size);
  };

  Outcome partial;
  BatchRequest r = MakeRequest(prompt, 10, &partial);
  r.prompt_pages = pages_of(16, 8);
  r.first_token = expected[0];
  ASSERT_TRUE(scheduler.Submit(std::move(r)).ok());
  ASSERT_TRUE(partial.done.WaitForNotificationWithTimeout(absl::Seconds(60)));
  ASSERT_TRUE(partial.status.ok()) << partial.status;
  EXPECT_EQ(partial.result.computed_prompt_tokens, 5);
  ExpectSameGreedy(*model, prompt, expected, partial.result.output_ids);

  // The whole prompt's K/V: nothing is computed; the given first token is
  // emitted as is, even if the model would not pick it.
  other.Reset(0);
  PrefillRow(*model, other, 0, prompt, 0);
  Outcome whole;
  BatchRequest w = MakeRequest(prompt, 3, &whole);
  w.prompt_pages = pages_of(21, 7);
  w.first_token = (expected[0] + 1) % 512;
  ASSERT_TRUE(scheduler.Submit(std::move(w)).ok());
  ASSERT_TRUE(whole.done.WaitForNotificationWithTimeout(absl::Seconds(60)));
  EXPECT_EQ(whole.result.computed_prompt_tokens, 0);
  ASSERT_EQ(whole.result.output_ids.size(), 3u);
  EXPECT_EQ(whole.result.output_ids[0], (expected[0] + 1) % 512);

  // The same 16 tokens as pages of another pool (as a mapped KV store's),
  // scattered among pages of noise: copied page to page when the page size
  // is the scheduler's, gathered first when it is not.
  other.Reset(0);
  PrefillRow(*model, other, 0, head, 0);
  for (int64_t page_size : {kDefaultKvPageSize, int64_t{8}}) {
    const torch::Tensor run = pages_of(16, page_size);
    torch::Tensor pool = torch::randn_like(torch::cat({run, run, run}));
    std::vector<int32_t> ids;
    for (int64_t i = 0; i < run.size(0); ++i) {
      ids.push_back(static_cast<int32_t>(3 * run.size(0) - 1 - 2 * i));
      pool[ids.back()].copy_(run[i]);
    }
    Outcome from_pool;
    BatchRequest p = MakeRequest(prompt, 10, &from_pool);
    p.prompt_pool = pool;
    p.prompt_pool_pages = ids;
    p.first_token = expected[0];
    ASSERT_TRUE(scheduler.Submit(std::move(p)).ok());
    ASSERT_TRUE(from_pool.done.WaitForNotificationWithTimeout(absl::Seconds(60)));
    ASSERT_TRUE(from_pool.status.ok()) << from_pool.status;
    EXPECT_EQ(from_pool.result.computed_prompt_tokens, 5) << page_size;
    ExpectSameGreedy(*model, prompt, expected, from_pool.result.output_ids);
  }
}

TEST(BatchSchedulerTest, CancelFreesTheSlotForTheNextRequest) {
  auto model = TinyModel();
  BatchSchedulerOptions options;
  options.max_batch = 1;
  auto scheduler_owned = BatchScheduler::Create(model.get(), options).value();
  BatchScheduler& scheduler = *scheduler_owned;
  Outcome first, second;
  absl::Notification started;
  BatchRequest r = MakeRequest(Prompt(4, 1), 80, &first);
  r.on_token = [&started](int) {
    if (!started.HasBeenNotified()) started.Notify();
  };
  auto id = scheduler.Submit(std::move(r));
  ASSERT_TRUE(id.ok());
  auto id2 = scheduler.Submit(MakeRequest(Prompt(6, 2), 5, &second));
  ASSERT_TRUE(id2.ok());
  ASSERT_TRUE(started.WaitForNotificationWithTimeout(absl::Seconds(60)));
  EXPECT_EQ(scheduler.queued(), 1);  // one slot: the second waits
  scheduler.Cancel(*id);
  ASSERT_TRUE(first.done.WaitForNotificationWithTimeout(absl::Seconds(60)));
  EXPECT_EQ(first.status.code(), absl::StatusCode::kCancelled);
  EXPECT_LT(first.result.output_ids.size(), 80u);
  ASSERT_TRUE(second.done.WaitForNotificationWithTimeout(absl::Seconds(60)));
  ASSERT_TRUE(second.status.ok()) << second.status;
  ExpectSameGreedy(*model, Prompt(6, 2), Offline(*model, Prompt(6, 2), 5),
                   second.result.output_ids);
  scheduler.Cancel(*id);  // finished already: ignored
  EXPECT_EQ(scheduler.active(), 0);
}

TEST(BatchSchedulerTest, BadRequestsAreRefusedAndNothingRuns) {
  auto model = TinyModel();
  auto scheduler_owned = BatchScheduler::Create(model.get(), {}).value();
  BatchScheduler& scheduler = *scheduler_owned;
  Outcome out;
  auto code = [&](BatchRequest r) { return scheduler.Submit(std::move(r)).status().code(); };
  EXPECT_EQ(code(MakeRequest({}, 4, &out)), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(MakeRequest({1, 512}, 4, &out)), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(MakeRequest({1, -1}, 4, &out)), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(MakeRequest({1, 2}, 0, &out)), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(MakeRequest(Prompt(90, 1), 7, &out)), absl::StatusCode::kInvalidArgument);
  BatchRequest bad_sampling = MakeRequest({1, 2}, 4, &out);
  bad_sampling.sampling.top_p = 2.0;
  EXPECT_EQ(code(std::move(bad_sampling)), absl::StatusCode::kInvalidArgument);
  BatchRequest bad_kv = MakeRequest({1, 2}, 4, &out);
  bad_kv.prompt_pages = torch::zeros({3, 2, 2, 4, 1, 16});  // 3 tokens for a 2-token prompt
  EXPECT_EQ(code(std::move(bad_kv)), absl::StatusCode::kInvalidArgument);
  const torch::Tensor pool = torch::zeros({4, 2, 2, 4, 1, 16});  // pages of one token
  BatchRequest bad_ids = MakeRequest({1, 2}, 4, &out);
  bad_ids.prompt_pool = pool;
  bad_ids.prompt_pool_pages = {4};  // outside the pool
  EXPECT_EQ(code(std::move(bad_ids)), absl::StatusCode::kInvalidArgument);
  BatchRequest too_many = MakeRequest({1, 2}, 4, &out);
  too_many.prompt_pool = pool;
  too_many.prompt_pool_pages = {0, 1, 2};  // 3 tokens for a 2-token prompt
  EXPECT_EQ(code(std::move(too_many)), absl::StatusCode::kInvalidArgument);
  BatchRequest both = MakeRequest({1, 2}, 4, &out);
  both.prompt_pool = pool;
  both.prompt_pool_pages = {0};
  both.prompt_pages = pool.narrow(0, 0, 1);
  EXPECT_EQ(code(std::move(both)), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(out.done.HasBeenNotified());
  EXPECT_EQ(scheduler.steps(), 0);
}

// Requests whose lengths overflow or whose sampling cannot be computed are
// refused up front; the running batch never sees them. Sampling at the
// stated minimums runs to the end beside a greedy victim.
TEST(BatchSchedulerTest, UncomputableRequestsAreRefusedAndHurtNoOne) {
  auto model = TinyModel();
  auto scheduler_owned = BatchScheduler::Create(model.get(), {}).value();
  BatchScheduler& scheduler = *scheduler_owned;
  const std::vector<int> prompt = Prompt(12, 8);
  Outcome victim;
  ASSERT_TRUE(scheduler.Submit(MakeRequest(prompt, 40, &victim)).ok());
  Outcome minimums;
  BatchRequest edge = MakeRequest(Prompt(7, 9), 30, &minimums);
  edge.sampling.temperature = kMinTemperature;
  edge.sampling.top_p = kMinTopP;
  ASSERT_TRUE(scheduler.Submit(std::move(edge)).ok());

  Outcome refused;
  auto code = [&](BatchRequest r) { return scheduler.Submit(std::move(r)).status().code(); };
  const auto kInvalid = absl::StatusCode::kInvalidArgument;
  EXPECT_EQ(code(MakeRequest({1, 2}, std::numeric_limits<int64_t>::max(), &refused)), kInvalid);
  for (double temperature : {1e-310, 5e-6, 100.5}) {
    BatchRequest r = MakeRequest({1, 2}, 4, &refused);
    r.sampling.temperature = temperature;
    EXPECT_EQ(code(std::move(r)), kInvalid) << temperature;
  }
  for (double top_p : {1e-310, 5e-7}) {
    BatchRequest r = MakeRequest({1, 2}, 4, &refused);
    r.sampling.temperature = 1.0;
    r.sampling.top_p = top_p;
    EXPECT_EQ(code(std::move(r)), kInvalid) << top_p;
  }

  ASSERT_TRUE(victim.done.WaitForNotificationWithTimeout(absl::Seconds(60)));
  ASSERT_TRUE(victim.status.ok()) << victim.status;
  ExpectSameGreedy(*model, prompt, Offline(*model, prompt, 40), victim.result.output_ids);
  ASSERT_TRUE(minimums.done.WaitForNotificationWithTimeout(absl::Seconds(60)));
  ASSERT_TRUE(minimums.status.ok()) << minimums.status;
  EXPECT_EQ(minimums.result.output_ids.size(), 30u);
  EXPECT_FALSE(refused.done.HasBeenNotified());
}

// The turn's callbacks run on the callback thread while the next decode
// step runs: while a's first token's callback sleeps, the scheduler makes
// the next step (one, not more: it then waits for that callback), where
// before the step waited for every callback of the turn.
TEST(BatchSchedulerTest, TheNextStepRunsWhileTheLastTurnsCallbacksRun) {
  auto model = TinyModel();
  auto scheduler = BatchScheduler::Create(model.get(), {}).value();
  Outcome a;
  std::atomic<int64_t> steps_after_sleep{-1};
  BatchRequest r = MakeRequest(Prompt(4, 3), 6, &a);
  r.on_token = [&](int t) {
    {
      absl::MutexLock lock(&a.mu);
      a.streamed.push_back(t);
      if (a.streamed.size() > 1) return;
    }
    absl::SleepFor(absl::Milliseconds(300));
    steps_after_sleep = scheduler->steps();
  };
  ASSERT_TRUE(scheduler->Submit(std::move(r)).ok());
  ASSERT_TRUE(a.done.WaitForNotificationWithTimeout(absl::Seconds(60)));
  ASSERT_TRUE(a.status.ok()) << a.status;
  EXPECT_EQ(steps_after_sleep.load(), 1);
  EXPECT_EQ(a.streamed, a.result.output_ids);
  ExpectSameGreedy(*model, Prompt(4, 3), Offline(*model, Prompt(4, 3), 6), a.result.output_ids);
}

// A first token the request gave (prefill's, streamed by the decode service
// already) is not posted before the admitting turn's step, so that step does
// not wait for the turn before's callbacks: it reaches its callback with the
// step's tokens, after the step. A first token drawn here still goes first
// (TheNextStepRunsWhileTheLastTurnsCallbacksRun).
TEST(BatchSchedulerTest, AGivenFirstTokenGoesWithTheStepsTokens) {
  auto model = TinyModel();
  const std::vector<int> prompt = Prompt(6, 4);
  const std::vector<int> expected = Offline(*model, prompt, 4);
  auto scheduler = BatchScheduler::Create(model.get(), {}).value();
  Outcome b;
  std::vector<int64_t> steps_seen;
  BatchRequest r = MakeRequest(prompt, 4, &b);
  r.first_token = expected[0];
  r.on_token = [&](int t) {
    absl::MutexLock lock(&b.mu);
    b.streamed.push_back(t);
    steps_seen.push_back(scheduler->steps());
  };
  ASSERT_TRUE(scheduler->Submit(std::move(r)).ok());
  ASSERT_TRUE(b.done.WaitForNotificationWithTimeout(absl::Seconds(60)));
  ASSERT_TRUE(b.status.ok()) << b.status;
  ASSERT_EQ(steps_seen.size(), 4u);
  EXPECT_GE(steps_seen[0], 1);  // the admitting turn's step ran first
  EXPECT_EQ(b.streamed, b.result.output_ids);
  EXPECT_EQ(b.result.output_ids.front(), expected[0]);
  ExpectSameGreedy(*model, prompt, expected, b.result.output_ids);
}

// options.slow_turn_ms: a turn that waits 60 ms for the turn before's
// callbacks is counted and logged with where its time went; with 0 no turn
// is.
TEST(BatchSchedulerTest, ASlowTurnIsLoggedWithWhereItsTimeWent) {
  auto model = TinyModel();
  BatchSchedulerOptions options;
  options.slow_turn_ms = 40;
  auto scheduler = BatchScheduler::Create(model.get(), options).value();
  Outcome a;
  BatchRequest r = MakeRequest(Prompt(4, 5), 4, &a);
  r.on_token = [&](int t) {
    bool first = false;
    {
      absl::MutexLock lock(&a.mu);
      a.streamed.push_back(t);
      first = a.streamed.size() == 1;
    }
    if (first) absl::SleepFor(absl::Milliseconds(60));
  };
  ::testing::internal::CaptureStderr();
  ASSERT_TRUE(scheduler->Submit(std::move(r)).ok());
  ASSERT_TRUE(a.done.WaitForNotificationWithTimeout(absl::Seconds(60)));
  scheduler->Shutdown();
  const std::string log = ::testing::internal::GetCapturedStderr();
  ASSERT_TRUE(a.status.ok()) << a.status;
  EXPECT_GE(scheduler->slow_turns(), 1);
  EXPECT_NE(log.find("decode scheduler: a turn at "), std::string::npos) << log;
  EXPECT_NE(log.find("waiting for the turn before's callbacks"), std::string::npos) << log;

  auto quiet = BatchScheduler::Create(model.get(), {}).value();
  Outcome b;
  ASSERT_TRUE(quiet->Submit(MakeRequest(Prompt(4, 6), 4, &b)).ok());
  ASSERT_TRUE(b.done.WaitForNotificationWithTimeout(absl::Seconds(60)));
  EXPECT_EQ(quiet->slow_turns(), 0);
}

TEST(BatchSchedulerTest, ShutdownEndsEveryRequest) {
  auto model = TinyModel();
  BatchSchedulerOptions options;
  options.max_batch = 1;
  auto scheduler = BatchScheduler::Create(model.get(), options).value();
  Outcome a, b;
  absl::Notification started;
  BatchRequest first = MakeRequest(Prompt(3, 1), 80, &a);
  first.on_token = [&](int) {  // holds the scheduler at a's first token a while
    if (!started.HasBeenNotified()) {
      started.Notify();
      absl::SleepFor(absl::Milliseconds(300));
    }
  };
  ASSERT_TRUE(scheduler->Submit(std::move(first)).ok());
  ASSERT_TRUE(scheduler->Submit(MakeRequest(Prompt(3, 2), 80, &b)).ok());
  ASSERT_TRUE(started.WaitForNotificationWithTimeout(absl::Seconds(60)));
  scheduler->Shutdown();  // during a's first token: a and b end unfinished
  scheduler.reset();
  ASSERT_TRUE(a.done.HasBeenNotified());
  ASSERT_TRUE(b.done.HasBeenNotified());
  EXPECT_EQ(a.status.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(b.status.code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(b.result.output_ids.empty());
}

}  // namespace batch_scheduler_test
}  // namespace nanoserve

namespace nanoserve {
namespace batch_scheduler_test {

// busy_for: zero while the loop waits for work, small while it steps, and
// growing while one turn does not end (here a token callback that blocks,
// as a wedged step would): what decode's /livez fails on.
TEST(BatchSchedulerTest, BusyForGrowsOnlyWhileTheLoopIsStuck) {
  auto model = TinyModel();
  auto scheduler_owned = BatchScheduler::Create(model.get(), {}).value();
  BatchScheduler& scheduler = *scheduler_owned;
  absl::SleepFor(absl::Milliseconds(50));
  EXPECT_EQ(scheduler.busy_for(), absl::ZeroDuration());  // idle

  Outcome out;
  absl::Notification entered, release;
  BatchRequest r = MakeRequest(Prompt(5, 1), 4, &out);
  r.on_token = [&](int) {
    if (!entered.HasBeenNotified()) {
      entered.Notify();
      release.WaitForNotification();  // the loop is stuck in this turn
    }
  };
  ASSERT_TRUE(scheduler.Submit(std::move(r)).ok());
  ASSERT_TRUE(entered.WaitForNotificationWithTimeout(absl::Seconds(60)));
  absl::SleepFor(absl::Milliseconds(300));
  EXPECT_GE(scheduler.busy_for(), absl::Milliseconds(300));
  release.Notify();
  ASSERT_TRUE(out.done.WaitForNotificationWithTimeout(absl::Seconds(60)));
  ASSERT_TRUE(out.status.ok()) << out.status;
  absl::SleepFor(absl::Milliseconds(50));
  EXPECT_EQ(scheduler.busy_for(), absl::ZeroDuration());  // idle again
}

}  // namespace batch_scheduler_test
}  // namespace nanoserve
