// Part C end to end: generation with --kv-cache prefix gives the greedy
// tokens of the cache off, for batches of many sharing shapes, page sizes 1
// and 16, and a pool so small that it evicts mid-batch; a batch computes each
// shared token once; the pool's limits give clear errors.
#include <gtest/gtest.h>

#include <algorithm>

#include "engine/generate.h"
#include "engine/prefill.h"
#include "kv_cache/prefix_cache.h"
#include "kv_cache/prefix_store.h"
#include "tests/test_util/model.h"
#include "tests/test_util/prefix_cache.h"

namespace nanoserve {
namespace prefix_generate_test {

using testing::ExpectSameGreedy;
using testing::GreedyOptions;
using testing::TinyModel;
using Batch = std::vector<std::vector<int>>;

// n tokens from a simple deterministic walk through the vocabulary.
std::vector<int> Tokens(int n, int start, int step = 7) {
  std::vector<int> v(n);
  for (int i = 0; i < n; ++i) v[i] = (start + i * step) % 512;
  return v;
}

std::vector<int> Concat(std::vector<int> a, const std::vector<int>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// Batches of many sharing shapes.
std::vector<std::pair<std::string, Batch>> Shapes() {
  const std::vector<int> system = Tokens(37, 3);
  return {
      {"seed", {{1, 2, 3, 4}, {1, 2, 3, 5}, {1, 2, 6}}},
      {"identical", {Tokens(20, 9), Tokens(20, 9), Tokens(20, 9)}},
      {"prefix_of_another", {Tokens(18, 5), Tokens(40, 5), Tokens(33, 5)}},
      {"no_sharing", {Tokens(12, 1), Tokens(25, 100), Tokens(7, 300)}},
      {"system_prompt",
       {Concat(system, Tokens(9, 50)), Concat(system, Tokens(21, 60)),
        Concat(system, Tokens(9, 70)), Concat(system, Tokens(4, 80))}},
      {"nested",
       {Concat(Tokens(20, 1), Tokens(20, 2)),
        Concat(Tokens(20, 1), Concat(Tokens(8, 2), Tokens(5, 9))),
        Concat(Tokens(20, 1), Tokens(17, 11)), Tokens(20, 1)}},
  };
}

class PrefixGenerateTest : public ::testing::TestWithParam<int64_t> {};

TEST_P(PrefixGenerateTest, GreedyTokensEqualCacheOffForEverySharingShape) {
  auto model = TinyModel();
  auto cache = testing::ModelCache(*model, GetParam(), 512);
  Generator generator(model.get(), cache.get());
  for (const auto& [name, batch] : Shapes()) {
    SCOPED_TRACE(name);
    auto off = generator.Generate(batch, GreedyOptions(KvCacheMode::kOff, 10)).value();
    // Twice: a cold cache (sharing within the batch), then a warm one.
    for (int pass = 0; pass < 2; ++pass) {
      auto prefix = generator.Generate(batch, GreedyOptions(KvCacheMode::kPrefix, 10));
      ASSERT_TRUE(prefix.ok()) << prefix.status();
      for (size_t r = 0; r < batch.size(); ++r) {
        ExpectSameGreedy(*model, batch[r], off.sequences[r].output_ids,
                         prefix->sequences[r].output_ids);
      }
      if (pass == 1 && GetParam() == 1) {
        // Warm: everything but each prompt's last token came from the cache.
        EXPECT_EQ(prefix->stats.prompt_tokens_computed, static_cast<int64_t>(batch.size()));
      }
    }
    ASSERT_TRUE(cache->CheckInvariants().ok());
    EXPECT_EQ(cache->Stats().pages_pinned, 0);
    EXPECT_EQ(cache->Stats().active_leases, 0);
  }
}

TEST_P(PrefixGenerateTest, TinyPoolEvictsMidBatchAndStaysExact) {
  auto model = TinyModel();
  const int64_t page_size = GetParam();
  // Two batches sharing nothing: one with a system prompt, one of prompts
  // that share nothing at all (so that its rows need nearly the whole pool).
  std::vector<Batch> batches(2);
  const std::vector<int> system = Tokens(33, 3);
  for (int i = 0; i < 6; ++i) batches[0].push_back(Concat(system, Tokens(6 + i, 40 * i + 1, 3)));
  batches[0].push_back(Tokens(35, 200));
  for (int i = 0; i < 7; ++i) batches[1].push_back(Tokens(30 + 2 * i, 260 + 31 * i, 11));
  // The pool is the only home of K/V: room for the larger batch's rows
  // (each prompt and its 8 new tokens, and the rows' scratch page) and no
  // more, so one batch's rows evict what the other stored, mid-batch.
  int64_t pages = 0;
  for (const Batch& batch : batches) {
    int64_t needed = 1;
    for (const auto& p : batch) {
      needed += (static_cast<int64_t>(p.size()) + 8 + page_size - 1) / page_size;
    }
    pages = std::max(pages, needed);
  }
  auto cache = testing::ModelCache(*model, page_size, pages);
  Generator generator(model.get(), cache.get());
  std::vector<GenerateResult> off;
  for (const Batch& batch : batches) {
    off.push_back(generator.Generate(batch, GreedyOptions(KvCacheMode::kOff, 8)).value());
  }
  for (int pass = 0; pass < 4; ++pass) {
    const Batch& batch = batches[pass % 2];
    auto prefix = generator.Generate(batch, GreedyOptions(KvCacheMode::kPrefix, 8));
    ASSERT_TRUE(prefix.ok()) << prefix.status();
    for (size_t r = 0; r < batch.size(); ++r) {
      ExpectSameGreedy(*model, batch[r], off[pass % 2].sequences[r].output_ids,
                       prefix->sequences[r].output_ids);
    }
    ASSERT_TRUE(cache->CheckInvariants().ok()) << cache->CheckInvariants();
  }
  PrefixCacheStats stats = cache->Stats();
  EXPECT_GT(stats.evicted_pages, 0);
  EXPECT_EQ(stats.pages_pinned, 0);
  // All but the scratch page the generator's rows keep between calls.
  EXPECT_EQ(cache->EvictAll() + stats.pages_free, cache->num_pages() - 1);
}

INSTANTIATE_TEST_SUITE_P(PageSize, PrefixGenerateTest, ::testing::Values(1, 16),
                         [](const auto& info) { return "page" + std::to_string(info.param); });

TEST(PrefixBatchTest, SeedBatchComputesEachSharedTokenOnce) {
  auto model = TinyModel();
  auto cache = testing::ModelCache(*model, 1, 64);
  Generator generator(model.get(), cache.get());
  // The seed's example: the batch's radix tree has 6 distinct tokens.
  Batch seed = {{1, 2, 3, 4}, {1, 2, 3, 5}, {1, 2, 6}};
  auto result = generator.Generate(seed, GreedyOptions(KvCacheMode::kPrefix, 3)).value();
  EXPECT_EQ(result.stats.prompt_tokens, 11);
  EXPECT_EQ(result.stats.prompt_tokens_computed, 6);
  EXPECT_EQ(result.sequences[0].cached_prompt_tokens, 3);
  EXPECT_EQ(result.sequences[1].cached_prompt_tokens, 3);
  EXPECT_EQ(result.sequences[2].cached_prompt_tokens, 2);
  EXPECT_EQ(result.stats.prompt_tokens_reused, 8);
  // Whole-prompt reuse: the same batch again computes only last tokens.
  auto again = generator.Generate(seed, GreedyOptions(KvCacheMode::kPrefix, 3)).value();
  EXPECT_EQ(again.stats.prompt_tokens_computed, 3);
  EXPECT_EQ(again.sequences[0].output_ids, result.sequences[0].output_ids);
}

TEST(PrefixBatchTest, SharedSystemPromptIsComputedOnce) {
  auto model = TinyModel();
  auto cache = testing::ModelCache(*model, 16, 64);
  Generator generator(model.get(), cache.get());
  const std::vector<int> system = Tokens(48, 11);
  Batch batch;
  for (int i = 0; i < 8; ++i) batch.push_back(Concat(system, Tokens(10, 30 * i + 7, 5)));
  auto result = generator.Generate(batch, GreedyOptions(KvCacheMode::kPrefix, 2)).value();
  // 48 shared tokens once (3 pages), then 8 suffixes of 10.
  EXPECT_EQ(result.stats.prompt_tokens_computed, 48 + 8 * 10);
  EXPECT_EQ(result.stats.prompt_tokens_reused, 8 * 48);
}

// A store whose pages the rows cannot share (as a remote one): it counts
// the rows it is asked to load.
class CopyingStore : public LocalPrefixStore {
 public:
  using LocalPrefixStore::LocalPrefixStore;
  PrefixCache* SharedPool() override { return nullptr; }
  absl::Status Load(absl::Span<const LeasedRow> loads, BlockTables& rows) override {
    for (const LeasedRow& load : loads) loaded_rows += load.tokens > 0 ? 1 : 0;
    return LocalPrefixStore::Load(loads, rows);
  }
  int64_t loaded_rows = 0;
};

// Rows over a pool of their own load a prefix that several share once per
// batch and copy it into the others; the tokens stay those of the cache off.
TEST(PrefixBatchTest, ASharedPrefixIsLoadedOncePerBatchFromAStoreElsewhere) {
  auto model = TinyModel();
  auto cache = testing::ModelCache(*model, 16, 64);
  CopyingStore store(cache.get());
  const std::vector<int> system = Tokens(40, 11);
  Batch batch;
  for (int i = 0; i < 4; ++i) batch.push_back(Concat(system, Tokens(6, 30 * i + 7, 5)));
  batch.push_back(Tokens(20, 300));  // shares nothing
  Generator generator(model.get());
  auto off = generator.Generate(batch, GreedyOptions(KvCacheMode::kOff, 1)).value();
  for (int pass = 0; pass < 2; ++pass) {  // cold, then everything cached
    store.loaded_rows = 0;
    auto rows_owned = KvCache::Create(model->config(), static_cast<int64_t>(batch.size()), 64,
                                      model->options().dtype, model->options().device)
                          .value();
    KvCache& rows = *rows_owned;
    auto result = PrefixPrefill(*model, store, 0).Run(batch, rows);
    ASSERT_TRUE(result.ok()) << result.status();
    ASSERT_TRUE(result->store_status.ok()) << result->store_status;
    for (size_t r = 0; r < 4; ++r) EXPECT_EQ(result->reused_tokens[r], 32) << pass;
    // The 32-token prefix once (and the lone prompt's 16, when cached).
    EXPECT_EQ(store.loaded_rows, pass == 0 ? 1 : 2);
    for (size_t r = 0; r < batch.size(); ++r) {
      EXPECT_EQ(result->logits[r].argmax(-1).item<int64_t>(), off.sequences[r].output_ids[0])
          << "row " << r << " pass " << pass;
    }
    EXPECT_TRUE(rows.tables().CheckInvariants().ok());
  }
  EXPECT_EQ(cache->Stats().active_leases, 0);
}

TEST(PrefixBatchTest, BatchedRaggedPrefillEqualsRowByRow) {
  // Rows with different cached lengths and as many tokens left run in one
  // pass; their logits equal prefilling each row alone.
  auto model = TinyModel();
  Batch prompts = {Tokens(30, 1), Tokens(22, 2), Tokens(26, 3)};
  auto batched_owned =
      KvCache::Create(model->config(), 3, 40, model->options().dtype, model->options().device)
          .value();
  KvCache& batched = *batched_owned;
  auto alone_owned =
      KvCache::Create(model->config(), 3, 40, model->options().dtype, model->options().device)
          .value();
  KvCache& alone = *alone_owned;
  const std::vector<int64_t> cached = {20, 12, 16};  // 10 tokens left in each row
  for (int64_t r = 0; r < 3; ++r) {
    std::vector<int> head(prompts[r].begin(), prompts[r].begin() + cached[r]);
    PrefillRow(*model, batched, r, head, 0);
    PrefillRow(*model, alone, r, head, 0);
  }
  std::vector<torch::Tensor> together = PrefillBatch(*model, batched, prompts, 0);
  for (int64_t r = 0; r < 3; ++r) {
    torch::Tensor single = PrefillRow(*model, alone, r, prompts[r], 0);
    EXPECT_LT((together[r] - single).abs().max().item<double>(), testing::LogitTolerance());
    EXPECT_EQ(batched.length(r), static_cast<int64_t>(prompts[r].size()));
  }
}

TEST(PrefixBatchTest, PoolLimitsGiveClearErrors) {
  auto model = TinyModel();
  auto cache = testing::ModelCache(*model, 16, 2);  // 32 tokens
  Generator generator(model.get(), cache.get());
  auto r = generator.Generate({Tokens(40, 1)}, GreedyOptions(KvCacheMode::kPrefix, 4));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("prefix cache pool"), std::string::npos) << r.status();
  EXPECT_FALSE(generator.Generate({}, GreedyOptions(KvCacheMode::kPrefix, 4)).ok());
  EXPECT_FALSE(generator.Generate({{1, 2}, {}}, GreedyOptions(KvCacheMode::kPrefix, 4)).ok());
  // Nothing was left pinned or half-inserted.
  EXPECT_EQ(cache->Stats().pages_in_use, 0);
  Generator no_cache(model.get());
  EXPECT_EQ(no_cache.Generate({{1}}, GreedyOptions(KvCacheMode::kPrefix, 4)).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

}  // namespace prefix_generate_test
}  // namespace nanoserve
