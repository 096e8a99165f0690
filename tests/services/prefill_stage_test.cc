// The prefill stage without a network, over a PrefixCache in this process:
// a batch sharing a prefix computes it once, first tokens are the offline
// engine's, leases are the caller's and nothing stays pinned when a call
// fails or is abandoned.
#include "prefill_service/prefill_stage.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "base/metrics.h"
#include "engine/generate.h"
#include "engine/kv_cache.h"
#include "kv_cache/prefix_cache.h"
#include "kv_cache/prefix_store.h"
#include "prefill_service/match_cost.h"
#include "prefill_service/prefill_handler.h"
#include "tests/test_util/model.h"
#include "tests/test_util/prefix_cache.h"

namespace nanoserve {
namespace prefill_stage_test {

constexpr int64_t kPageSize = 8;

std::vector<int> Tokens(int length, int salt) {
  std::vector<int> p;
  for (int i = 0; i < length; ++i) p.push_back((i * 31 + salt * 97 + 3) % 512);
  return p;
}

class PrefillStageTest : public ::testing::Test {
 protected:
  PrefillStageTest() : model_(testing::TinyModel()) {
    cache_ = testing::ModelCache(*model_, kPageSize, 64);
    store_ = std::make_unique<LocalPrefixStore>(cache_.get());
  }

  int FirstToken(const std::vector<int>& prompt) {
    GenerateOptions options;
    options.max_new_tokens = 1;
    return Generator(model_.get()).Generate({prompt}, options).value().sequences[0].output_ids[0];
  }

  std::unique_ptr<Gpt2Model> model_;
  std::unique_ptr<PrefixCache> cache_;
  std::unique_ptr<LocalPrefixStore> store_;
};

TEST_F(PrefillStageTest, ABatchSharingAPrefixComputesItOnce) {
  PrefillStage stage(model_.get(), store_.get(), {}, nullptr);
  // Four prompts: 24 shared tokens (3 pages) + 5 of their own.
  const std::vector<int> shared = Tokens(24, 1);
  std::vector<PrefillPrompt> prompts;
  for (int i = 0; i < 4; ++i) {
    PrefillPrompt p{shared, {}};
    const std::vector<int> own = Tokens(5, 10 + i);
    p.tokens.insert(p.tokens.end(), own.begin(), own.end());
    prompts.push_back(p);
  }
  auto outcome = stage.Prefill(prompts, absl::InfiniteFuture());
  ASSERT_TRUE(outcome.ok()) << outcome.status();
  EXPECT_TRUE(outcome->store_status.ok()) << outcome->store_status;
  EXPECT_EQ(outcome->computed_tokens, 24 + 4 * 5);
  ASSERT_EQ(outcome->prompts.size(), 4u);
  for (int i = 0; i < 4; ++i) {
    const PrefilledPrompt& p = outcome->prompts[i];
    EXPECT_EQ(p.cached_tokens, 24) << i;
    EXPECT_EQ(p.stored_tokens, 24) << i;  // 29 tokens: three whole pages
    EXPECT_NE(p.lease_id, PrefixStore::kNoLease) << i;
    testing::ExpectSameGreedy(*model_, prompts[i].tokens, {FirstToken(prompts[i].tokens)},
                              {p.first_token});
  }
  EXPECT_EQ(cache_->Stats().pages_pinned, 3);  // the leases are ours
  stage.Abandon(*outcome);
  EXPECT_EQ(cache_->Stats().pages_pinned, 0);
  EXPECT_EQ(cache_->Stats().active_leases, 0);

  // Again: everything but each prompt's last page comes from the store.
  outcome = stage.Prefill(prompts, absl::InfiniteFuture());
  ASSERT_TRUE(outcome.ok());
  EXPECT_EQ(outcome->computed_tokens, 4 * 5);
  stage.Abandon(*outcome);
  EXPECT_TRUE(cache_->CheckInvariants().ok());
}

// The handler refuses a caller of another model before anything runs (its
// first tokens and pages would be another model's: decode would continue
// them with its own weights, silently); a caller of the same model, or one
// that does not say, is served.
TEST_F(PrefillStageTest, TheHandlerRefusesACallerOfAnotherModel) {
  PrefillStage stage(model_.get(), store_.get(), {}, nullptr);
  PrefillHandler handler(&stage, "weights:00000000000000aa 10 bytes");
  v1::PrefillRequest request;
  const std::vector<int> prompt = Tokens(9, 1);
  request.add_prompts()->mutable_tokens()->Add(prompt.begin(), prompt.end());
  request.set_model_fingerprint("weights:00000000000000bb 10 bytes");
  v1::PrefillResponse response;
  const grpc::Status other =
      handler.Prefill(request, absl::InfiniteFuture(), PeerIdentity(), &response);
  EXPECT_EQ(other.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << other.error_message();
  EXPECT_NE(other.error_message().find("00aa"), std::string::npos);
  EXPECT_NE(other.error_message().find("00bb"), std::string::npos);
  EXPECT_EQ(cache_->Stats().lookup_tokens, 0) << "nothing ran";
  for (const char* model : {"weights:00000000000000aa 10 bytes", ""}) {
    request.set_model_fingerprint(model);
    v1::PrefillResponse served;
    const grpc::Status ok =
        handler.Prefill(request, absl::InfiniteFuture(), PeerIdentity(), &served);
    ASSERT_TRUE(ok.ok()) << model << ": " << ok.error_message();
    ASSERT_EQ(served.prompts_size(), 1);
    testing::ExpectSameGreedy(*model_, prompt, {FirstToken(prompt)},
                              {served.prompts(0).first_token()});
    handler.Abandon(served);
  }
  EXPECT_EQ(cache_->Stats().active_leases, 0);
}

// Prompts of at most a page and one token have no whole page to match
// (a match covers at most len - 1 tokens): the store is not asked, and a
// whole page is still stored.
TEST_F(PrefillStageTest, PromptsNoLongerThanAPageAskTheStoreNothing) {
  PrefillStage stage(model_.get(), store_.get(), {}, nullptr);
  const std::vector<PrefillPrompt> prompts = {{Tokens(kPageSize, 1), {}},
                                              {Tokens(kPageSize - 3, 2), {}}};
  auto outcome = stage.Prefill(prompts, absl::InfiniteFuture());
  ASSERT_TRUE(outcome.ok()) << outcome.status();
  EXPECT_EQ(cache_->Stats().lookups, 0);
  EXPECT_EQ(outcome->prompts[0].cached_tokens, 0);
  EXPECT_EQ(outcome->prompts[0].stored_tokens, kPageSize);
  EXPECT_EQ(outcome->prompts[1].stored_tokens, 0);
  EXPECT_EQ(outcome->computed_tokens, 2 * kPageSize - 3);
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(outcome->prompts[i].first_token, FirstToken(prompts[i].tokens)) << i;
  }
  stage.Abandon(*outcome);
  // One token more, and the first prompt's page is matched.
  PrefillPrompt longer{Tokens(kPageSize, 1), {}};
  longer.tokens.push_back(7);
  outcome = stage.Prefill({longer}, absl::InfiniteFuture());
  ASSERT_TRUE(outcome.ok()) << outcome.status();
  EXPECT_GT(cache_->Stats().lookups, 0);
  EXPECT_EQ(outcome->prompts[0].cached_tokens, kPageSize);
  stage.Abandon(*outcome);
}

// store_match_min_tokens: a batch that could reuse fewer tokens is computed
// without a match (and counted), its pages still stored; a batch that could
// reuse as many asks, and finds them.
TEST_F(PrefillStageTest, BatchesWithLessToReuseThanAMatchCostsAskNothing) {
  PrefillStageOptions options;
  options.store_match_min_tokens = 3 * kPageSize;
  MetricsRegistry metrics;
  PrefillStage stage(model_.get(), store_.get(), options, &metrics);
  EXPECT_EQ(stage.store_match_min_tokens(), 3 * kPageSize);
  const PrefillPrompt prompt{Tokens(2 * kPageSize + 1, 4), {}};  // two pages to match
  for (int round = 0; round < 2; ++round) {
    auto outcome = stage.Prefill({prompt}, absl::InfiniteFuture());
    ASSERT_TRUE(outcome.ok()) << outcome.status();
    EXPECT_EQ(cache_->Stats().lookups, 0) << round;
    EXPECT_EQ(outcome->prompts[0].cached_tokens, 0) << round;
    EXPECT_EQ(outcome->prompts[0].stored_tokens, 2 * kPageSize) << round;
    EXPECT_EQ(outcome->computed_tokens, 2 * kPageSize + 1) << round;
    EXPECT_EQ(outcome->prompts[0].first_token, FirstToken(prompt.tokens)) << round;
    stage.Abandon(*outcome);
  }
  EXPECT_NE(metrics.Render().find("nanoserve_prefill_store_matches_skipped_total 2"),
            std::string::npos)
      << metrics.Render();
  EXPECT_NE(metrics.Render().find("nanoserve_prefill_store_match_min_tokens 24"),
            std::string::npos);
  // Two of them: four pages to reuse, so the store is asked, and has them.
  auto outcome = stage.Prefill({prompt, prompt}, absl::InfiniteFuture());
  ASSERT_TRUE(outcome.ok()) << outcome.status();
  EXPECT_GT(cache_->Stats().lookups, 0);
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(outcome->prompts[i].cached_tokens, 2 * kPageSize) << i;
    EXPECT_EQ(outcome->prompts[i].first_token, FirstToken(prompt.tokens)) << i;
  }
  EXPECT_EQ(outcome->computed_tokens, 2);
  stage.Abandon(*outcome);
  EXPECT_EQ(cache_->Stats().active_leases, 0);
  EXPECT_TRUE(cache_->CheckInvariants().ok());
}

// -1 (measured) stays 0 on the CPU: every batch with a page to reuse asks.
// On a GPU the warm-up measures it: some tokens, within the positions.
TEST_F(PrefillStageTest, AMeasuredMatchCostIsZeroOnTheCpuAndMeasuredOnAGpu) {
  PrefillStageOptions options;
  options.max_prompts = 2;
  options.store_match_min_tokens = -1;
  PrefillStage stage(model_.get(), store_.get(), options, nullptr);
  EXPECT_EQ(stage.store_match_min_tokens(), 0);
  ASSERT_TRUE(stage.WarmUp().ok());
  if (model_->options().device.is_cuda()) {
    EXPECT_GT(stage.store_match_min_tokens(), 0);
    EXPECT_LE(stage.store_match_min_tokens(), model_->config().n_positions);
  } else {
    EXPECT_EQ(stage.store_match_min_tokens(), 0);
  }
}

// What the measures take: real times, and the match's probes leave the
// store as it was; the threshold is their ratio within the model's
// positions.
TEST_F(PrefillStageTest, MeasuringAMatchLeavesTheStoreAsItWas) {
  // Each probe after the idle time asked (a lone request's round trip).
  const absl::Time began = absl::Now();
  absl::StatusOr<double> match_ms = MeasureMatchMs(*model_, *store_, absl::Milliseconds(30));
  EXPECT_GE(absl::Now() - began, absl::Milliseconds(7 * 30));
  ASSERT_TRUE(match_ms.ok()) << match_ms.status();
  EXPECT_GT(*match_ms, 0);
  EXPECT_EQ(cache_->Stats().lookups, 7);
  EXPECT_EQ(cache_->Stats().pages_cached, 0);
  EXPECT_EQ(cache_->Stats().active_leases, 0);
  EXPECT_TRUE(cache_->CheckInvariants().ok());
  absl::StatusOr<double> token_us = MeasurePromptTokenUs(*model_, 0, nullptr);
  ASSERT_TRUE(token_us.ok()) << token_us.status();
  EXPECT_TRUE(std::isfinite(*token_us));
  EXPECT_EQ(cache_->Stats().lookups, 7) << "the engine alone";
  // Round trip over a token's time, rounded up, within the model's
  // positions.
  EXPECT_EQ(MatchMinTokens(0.5, 2.0, 1024), 250);
  EXPECT_EQ(MatchMinTokens(0.5, 3.0, 1024), 167);
  EXPECT_EQ(MatchMinTokens(5.0, 1.0, 1024), 1024);
  EXPECT_EQ(MatchMinTokens(0.5, 0.0, 1024), 1024);
  EXPECT_EQ(MatchMinTokens(0.0, 2.0, 1024), 0);
}

TEST_F(PrefillStageTest, WithoutAStoreEverythingIsComputed) {
  PrefillStage stage(model_.get(), nullptr, {}, nullptr);
  const std::vector<PrefillPrompt> prompts = {{Tokens(20, 1), {}}, {Tokens(20, 1), {}}};
  auto outcome = stage.Prefill(prompts, absl::InfiniteFuture());
  ASSERT_TRUE(outcome.ok()) << outcome.status();
  EXPECT_FALSE(outcome->store_status.ok());
  EXPECT_EQ(outcome->computed_tokens, 40);
  EXPECT_EQ(outcome->prompts[0].lease_id, PrefixStore::kNoLease);
  EXPECT_EQ(outcome->prompts[0].first_token, outcome->prompts[1].first_token);
}

// options.slow_batch: a batch over it is logged with when it began, its
// calls and prompts and where its time went; by default none is.
TEST_F(PrefillStageTest, ASlowBatchIsLoggedWithWhereItsTimeWent) {
  PrefillStageOptions options;
  options.slow_batch = absl::Nanoseconds(1);  // every batch
  PrefillStage stage(model_.get(), store_.get(), options, nullptr);
  const std::vector<PrefillPrompt> prompts = {{Tokens(20, 1), {}}, {Tokens(12, 2), {}}};
  ::testing::internal::CaptureStderr();
  auto outcome = stage.Prefill(prompts, absl::InfiniteFuture());
  const std::string log = ::testing::internal::GetCapturedStderr();
  ASSERT_TRUE(outcome.ok()) << outcome.status();
  stage.Abandon(*outcome);
  EXPECT_NE(log.find("prefill: a batch at "), std::string::npos) << log;
  EXPECT_NE(log.find("1 calls, 2 prompts of up to 20 tokens"), std::string::npos) << log;
  EXPECT_NE(log.find("32 prompt tokens computed"), std::string::npos) << log;

  PrefillStage quiet(model_.get(), nullptr, {}, nullptr);
  ::testing::internal::CaptureStderr();
  ASSERT_TRUE(quiet.Prefill(prompts, absl::InfiniteFuture()).ok());
  EXPECT_EQ(::testing::internal::GetCapturedStderr().find("prefill: a batch"), std::string::npos);
}

// The warm-up before serving runs the engine only: the store sees no call
// and holds nothing of it, and the stage serves as before.
TEST_F(PrefillStageTest, WarmUpTouchesNoStore) {
  PrefillStageOptions options;
  options.max_prompts = 4;
  PrefillStage stage(model_.get(), store_.get(), options, nullptr);
  absl::StatusOr<double> ms = stage.WarmUp();
  ASSERT_TRUE(ms.ok()) << ms.status();
  EXPECT_GT(*ms, 0);
  EXPECT_EQ(cache_->Stats().lookups, 0);
  EXPECT_EQ(cache_->Stats().pages_cached, 0);
  const std::vector<int> prompt = Tokens(20, 3);
  auto outcome = stage.Prefill({{prompt, {}}}, absl::InfiniteFuture());
  ASSERT_TRUE(outcome.ok()) << outcome.status();
  EXPECT_EQ(outcome->prompts[0].first_token, FirstToken(prompt));
  store_->Release(outcome->prompts[0].lease_id).IgnoreError();
  EXPECT_TRUE(cache_->CheckInvariants().ok());
}

// A store whose pool is not the rows' (as a store in another process is,
// or one whose pool this process does not share): rows load and store its
// pages by copies. The in-process store's own code, its pool only hidden.
class StoreElsewhere : public LocalPrefixStore {
 public:
  using LocalPrefixStore::LocalPrefixStore;
  PrefixCache* SharedPool() override { return nullptr; }
};

// Rows kept from batch to batch (the GPU's default, asked for here on any
// device) serve what rows of each batch's own serve: a shared prefix
// computed once, then loaded from the store, the offline engine's first
// tokens; a batch too large for them gets rows of its own; the warm-up and
// a stage without a store use them too; nothing stays pinned.
TEST_F(PrefillStageTest, KeptRowsServeWhatRowsPerBatchServe) {
  auto pool = testing::ModelCache(*model_, kDefaultKvPageSize, 64);
  StoreElsewhere store(pool.get());
  PrefillStageOptions options;
  options.max_prompts = 8;
  options.kept_rows_tokens = 256;  // 16 pages
  PrefillStage stage(model_.get(), &store, options, nullptr);
  ASSERT_TRUE(stage.WarmUp().ok());
  const std::vector<int> shared = Tokens(32, 1);
  std::vector<PrefillPrompt> prompts;  // 4 x 37 tokens: 12 pages
  for (int i = 0; i < 4; ++i) {
    PrefillPrompt p{shared, {}};
    const std::vector<int> own = Tokens(5, 10 + i);
    p.tokens.insert(p.tokens.end(), own.begin(), own.end());
    prompts.push_back(p);
  }
  for (int round = 0; round < 2; ++round) {
    auto outcome = stage.Prefill(prompts, absl::InfiniteFuture());
    ASSERT_TRUE(outcome.ok()) << outcome.status();
    EXPECT_TRUE(outcome->store_status.ok()) << outcome->store_status;
    EXPECT_EQ(outcome->computed_tokens, round == 0 ? 32 + 4 * 5 : 4 * 5);
    for (int i = 0; i < 4; ++i) {
      EXPECT_EQ(outcome->prompts[i].cached_tokens, 32) << i;
      testing::ExpectSameGreedy(*model_, prompts[i].tokens, {FirstToken(prompts[i].tokens)},
                                {outcome->prompts[i].first_token});
    }
    stage.Abandon(*outcome);
  }
  // 5 x 70 tokens (25 pages) do not fit the kept rows.
  std::vector<PrefillPrompt> large;
  for (int i = 0; i < 5; ++i) large.push_back({Tokens(70, 20 + i), {}});
  auto outcome = stage.Prefill(large, absl::InfiniteFuture());
  ASSERT_TRUE(outcome.ok()) << outcome.status();
  for (int i = 0; i < 5; ++i) {
    testing::ExpectSameGreedy(*model_, large[i].tokens, {FirstToken(large[i].tokens)},
                              {outcome->prompts[i].first_token});
  }
  stage.Abandon(*outcome);
  EXPECT_EQ(pool->Stats().pages_pinned, 0);
  EXPECT_TRUE(pool->CheckInvariants().ok());

  PrefillStage alone(model_.get(), nullptr, options, nullptr);
  ASSERT_TRUE(alone.WarmUp().ok());
  auto computed = alone.Prefill(prompts, absl::InfiniteFuture());
  ASSERT_TRUE(computed.ok()) << computed.status();
  EXPECT_EQ(computed->computed_tokens, 4 * 37);
  for (int i = 0; i < 4; ++i) {
    testing::ExpectSameGreedy(*model_, prompts[i].tokens, {FirstToken(prompts[i].tokens)},
                              {computed->prompts[i].first_token});
  }
}

TEST_F(PrefillStageTest, BadBatchesAndLateCallsHoldNothing) {
  PrefillStageOptions options;
  options.max_prompts = 2;
  PrefillStage stage(model_.get(), store_.get(), options, nullptr);
  auto code = [&](const std::vector<PrefillPrompt>& prompts) {
    return stage.Prefill(prompts, absl::InfiniteFuture()).status().code();
  };
  const auto kInvalid = absl::StatusCode::kInvalidArgument;
  EXPECT_EQ(code({}), kInvalid);
  EXPECT_EQ(code({{{}, {}}}), kInvalid);
  EXPECT_EQ(code({{{1, 512}, {}}}), kInvalid);
  EXPECT_EQ(code({{Tokens(97, 1), {}}}), kInvalid);  // over the context
  EXPECT_EQ(code({{{1}, {}}, {{2}, {}}, {{3}, {}}}), kInvalid);
  SamplingOptions bad;
  bad.top_p = 0;
  EXPECT_EQ(code({{{1, 2}, bad}}), kInvalid);
  EXPECT_EQ(stage.Prefill({{Tokens(20, 3), {}}}, absl::Now() - absl::Seconds(1)).status().code(),
            absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(cache_->Stats().pages_pinned, 0);
  EXPECT_EQ(cache_->Stats().active_leases, 0);
}

// The first tokens reach on_first once, after the forward pass and before
// the pages are stored (so a caller streams them while the store's calls
// run), and the outcome carries the same tokens.
TEST_F(PrefillStageTest, FirstTokensComeBeforeThePagesAreStored) {
  PrefillStage stage(model_.get(), store_.get(), {}, nullptr);
  const std::vector<PrefillPrompt> prompts = {{Tokens(29, 5), {}}, {Tokens(17, 6), {}}};
  std::vector<int> first;
  int calls = 0;
  int64_t cached_then = -1;
  auto outcome = stage.Prefill(prompts, absl::InfiniteFuture(), [&](absl::Span<const int> tokens) {
    ++calls;
    first.assign(tokens.begin(), tokens.end());
    cached_then = cache_->Stats().pages_cached;
  });
  ASSERT_TRUE(outcome.ok()) << outcome.status();
  EXPECT_EQ(calls, 1);
  ASSERT_EQ(first.size(), 2u);
  for (size_t r = 0; r < 2; ++r) {
    EXPECT_EQ(first[r], outcome->prompts[r].first_token) << r;
    testing::ExpectSameGreedy(*model_, prompts[r].tokens, {FirstToken(prompts[r].tokens)},
                              {first[r]});
  }
  EXPECT_EQ(cached_then, 0);                       // nothing stored yet
  EXPECT_EQ(cache_->Stats().pages_cached, 3 + 2);  // 29 and 17 tokens: whole pages
  stage.Abandon(*outcome);

  // Without a store, and for each call of a batch: its own prompts' tokens.
  PrefillStage alone(model_.get(), nullptr, {}, nullptr);
  calls = 0;
  auto computed =
      alone.Prefill({prompts[1]}, absl::InfiniteFuture(), [&](absl::Span<const int> tokens) {
        ++calls;
        first.assign(tokens.begin(), tokens.end());
      });
  ASSERT_TRUE(computed.ok()) << computed.status();
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(first, std::vector<int>{computed->prompts[0].first_token});

  PrefillStageOptions batching;
  batching.batch_window = absl::Minutes(10);  // the batch starts when 2 prompts wait
  batching.max_prompts = 2;
  PrefillStage batched(model_.get(), store_.get(), batching, nullptr);
  std::vector<int> got[2];
  absl::StatusOr<PrefillOutcome> outcomes[2];
  std::thread other([&] {
    outcomes[1] =
        batched.Prefill({prompts[1]}, absl::InfiniteFuture(),
                        [&](absl::Span<const int> t) { got[1].assign(t.begin(), t.end()); });
  });
  outcomes[0] = batched.Prefill({prompts[0]}, absl::InfiniteFuture(), [&](absl::Span<const int> t) {
    got[0].assign(t.begin(), t.end());
  });
  other.join();
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(outcomes[i].ok()) << outcomes[i].status();
    EXPECT_EQ(outcomes[i]->batch_calls, 2);
    EXPECT_EQ(got[i], std::vector<int>{outcomes[i]->prompts[0].first_token}) << i;
    testing::ExpectSameGreedy(*model_, prompts[i].tokens, {FirstToken(prompts[i].tokens)}, got[i]);
    batched.Abandon(*outcomes[i]);
  }
  EXPECT_EQ(cache_->Stats().pages_pinned, 0);
}

}  // namespace prefill_stage_test
}  // namespace nanoserve

namespace nanoserve {
namespace prefill_stage_test {

// Cache salts through the stage: the same prompt under two salts is
// computed twice and stored twice; under the same salt it is reused. In one
// batch, prompts of two salts share no branch point either.
TEST_F(PrefillStageTest, CacheSaltsKeepPrefixesApart) {
  PrefillStage stage(model_.get(), store_.get(), {}, nullptr);
  const std::vector<int> prompt = Tokens(29, 4);  // three whole pages + 5
  auto run = [&](const std::vector<PrefillPrompt>& prompts) {
    auto outcome = stage.Prefill(prompts, absl::InfiniteFuture());
    EXPECT_TRUE(outcome.ok()) << outcome.status();
    stage.Abandon(*outcome);
    return *outcome;
  };
  EXPECT_EQ(run({{prompt, {}, "tenant-a"}}).prompts[0].cached_tokens, 0);
  PrefillOutcome b = run({{prompt, {}, "tenant-b"}});
  EXPECT_EQ(b.prompts[0].cached_tokens, 0);
  EXPECT_EQ(b.computed_tokens, 29);
  EXPECT_EQ(run({{prompt, {}, ""}}).prompts[0].cached_tokens, 0);
  PrefillOutcome a = run({{prompt, {}, "tenant-a"}});
  EXPECT_EQ(a.prompts[0].cached_tokens, 24);
  EXPECT_EQ(a.computed_tokens, 5);
  EXPECT_EQ(cache_->Stats().namespaces, 3);
  EXPECT_EQ(cache_->Stats().pages_cached, 9);
  testing::ExpectSameGreedy(*model_, prompt, {FirstToken(prompt)}, {a.prompts[0].first_token});

  // One batch, two new salts sharing a 24-token prefix: nothing is shared.
  std::vector<int> other = Tokens(24, 4);
  other.push_back(7);
  PrefillOutcome mixed = run({{prompt, {}, "tenant-c"}, {other, {}, "tenant-d"}});
  EXPECT_EQ(mixed.computed_tokens, 29 + 25);
  EXPECT_EQ(mixed.prompts[1].cached_tokens, 0);
  EXPECT_EQ(cache_->Stats().active_leases, 0);
  EXPECT_EQ(
      stage
          .Prefill({{prompt, {}, std::string(kMaxCacheSaltBytes + 1, 'x')}}, absl::InfiniteFuture())
          .status()
          .code(),
      absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(cache_->CheckInvariants().ok()) << cache_->CheckInvariants();
}

}  // namespace prefill_stage_test
}  // namespace nanoserve
