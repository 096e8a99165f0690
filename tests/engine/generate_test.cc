// Generation in every KV cache mode gives the same greedy tokens; bad input
// is refused with a clear error.
#include "engine/generate.h"

#include <gtest/gtest.h>

#include "kv_cache/prefix_cache.h"
#include "tests/test_util/model.h"

namespace nanoserve {
namespace generate_test {

using testing::ExpectSameGreedy;
using testing::GreedyOptions;
using testing::TinyModel;

std::vector<int> Seq(int n, int start, int step, int vocab = 512) {
  std::vector<int> v(n);
  for (int i = 0; i < n; ++i) v[i] = (start + i * step) % vocab;
  return v;
}

TEST(GenerateTest, CacheOnGivesTheSameGreedyTokensAsCacheOff) {
  auto model = TinyModel();
  Generator generator(model.get());
  // Prompt and output lengths up to the context limit (96).
  for (auto [prompt_len, max_new] :
       std::vector<std::pair<int, int>>{{1, 20}, {9, 30}, {40, 56}, {90, 6}}) {
    SCOPED_TRACE(::testing::Message() << "prompt " << prompt_len << " new " << max_new);
    std::vector<int> prompt = Seq(prompt_len, prompt_len * 7, 13);
    auto off = generator.Generate({prompt}, GreedyOptions(KvCacheMode::kOff, max_new)).value();
    auto on = generator.Generate({prompt}, GreedyOptions(KvCacheMode::kOn, max_new)).value();
    ASSERT_EQ(off.sequences[0].output_ids.size(), static_cast<size_t>(max_new));
    ExpectSameGreedy(*model, prompt, off.sequences[0].output_ids, on.sequences[0].output_ids);
    EXPECT_EQ(on.stats.prompt_tokens_computed, prompt_len);
  }
}

TEST(GenerateTest, BatchOfUnequalPromptsEqualsEachAlone) {
  auto model = TinyModel();
  Generator generator(model.get());
  std::vector<std::vector<int>> prompts = {Seq(3, 1, 5), Seq(17, 2, 3), Seq(8, 9, 11)};
  for (KvCacheMode mode : {KvCacheMode::kOff, KvCacheMode::kOn}) {
    auto batch = generator.Generate(prompts, GreedyOptions(mode, 12)).value();
    for (size_t r = 0; r < prompts.size(); ++r) {
      auto alone = generator.Generate({prompts[r]}, GreedyOptions(KvCacheMode::kOff, 12)).value();
      ExpectSameGreedy(*model, prompts[r], alone.sequences[0].output_ids,
                       batch.sequences[r].output_ids);
    }
  }
}

TEST(GenerateTest, ChunkedPrefillGivesTheSameTokens) {
  auto model = TinyModel();
  Generator generator(model.get());
  std::vector<int> prompt = Seq(50, 4, 9);
  auto whole = generator.Generate({prompt}, GreedyOptions(KvCacheMode::kOn, 10)).value();
  GenerateOptions chunked = GreedyOptions(KvCacheMode::kOn, 10);
  chunked.prefill_chunk = 16;
  auto out = generator.Generate({prompt}, chunked).value();
  ExpectSameGreedy(*model, prompt, whole.sequences[0].output_ids, out.sequences[0].output_ids);
}

// min_capacity (a benchmark's short warm-ups and longer timed runs on one
// Generator, one cache) changes no token: short and long generations with
// it equal a fresh generator's; out of [0, n_positions] it is refused.
TEST(GenerateTest, MinCapacityChangesNoToken) {
  auto model = TinyModel();
  Generator kept(model.get());
  const std::vector<std::vector<int>> prompts = {Seq(12, 3, 7), Seq(20, 5, 3)};
  for (int max_new : {4, 30, 4}) {
    GenerateOptions options = GreedyOptions(KvCacheMode::kOn, max_new);
    const auto fresh = Generator(model.get()).Generate(prompts, options).value();
    options.min_capacity = 20 + 30;
    const auto got = kept.Generate(prompts, options).value();
    for (size_t r = 0; r < prompts.size(); ++r) {
      ExpectSameGreedy(*model, prompts[r], fresh.sequences[r].output_ids,
                       got.sequences[r].output_ids);
    }
  }
  GenerateOptions bad = GreedyOptions(KvCacheMode::kOn, 4);
  bad.min_capacity = 97;
  auto refused = kept.Generate(prompts, bad);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(refused.status().message().find("min_capacity"), std::string::npos);
}

TEST(GenerateTest, StopsAtEndOfText) {
  auto model = TinyModel();
  Generator generator(model.get());
  std::vector<int> prompt = Seq(6, 3, 7);
  auto free_run = generator.Generate({prompt}, GreedyOptions(KvCacheMode::kOn, 8)).value();
  // Declare the third generated token the end-of-text token.
  GenerateOptions o = GreedyOptions(KvCacheMode::kOn, 8);
  o.stop_at_end_of_text = true;
  o.end_of_text_id = free_run.sequences[0].output_ids[2];
  auto stopped = generator.Generate({prompt}, o).value();
  const auto& ids = stopped.sequences[0].output_ids;
  EXPECT_EQ(stopped.sequences[0].finish_reason, "stop");
  ASSERT_FALSE(ids.empty());
  EXPECT_EQ(ids.back(), o.end_of_text_id);
  EXPECT_LE(ids.size(), 3u);
  EXPECT_EQ(free_run.sequences[0].finish_reason, "length");
}

TEST(GenerateTest, SamplingIsReproducibleForASeedAndTopKOneIsGreedy) {
  auto model = TinyModel();
  Generator generator(model.get());
  std::vector<int> prompt = Seq(5, 1, 1);
  GenerateOptions o = GreedyOptions(KvCacheMode::kOn, 16);
  o.sampling.temperature = 1.0;
  o.sampling.top_p = 0.9;
  o.sampling.seed = 42;
  auto a = generator.Generate({prompt}, o).value();
  auto b = generator.Generate({prompt}, o).value();
  EXPECT_EQ(a.sequences[0].output_ids, b.sequences[0].output_ids);
  o.sampling.seed = 43;
  auto c = generator.Generate({prompt}, o).value();
  EXPECT_NE(a.sequences[0].output_ids, c.sequences[0].output_ids);
  o.sampling.top_k = 1;
  auto greedy = generator.Generate({prompt}, GreedyOptions(KvCacheMode::kOn, 16)).value();
  EXPECT_EQ(generator.Generate({prompt}, o).value().sequences[0].output_ids,
            greedy.sequences[0].output_ids);
}

TEST(GenerateTest, RefusesBadInputWithClearErrors) {
  auto model = TinyModel();
  Generator generator(model.get());
  auto expect_error = [&](const std::vector<std::vector<int>>& prompts, const GenerateOptions& o,
                          const std::string& needle) {
    auto r = generator.Generate(prompts, o);
    ASSERT_FALSE(r.ok()) << needle;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find(needle), std::string::npos) << r.status();
  };
  GenerateOptions ok = GreedyOptions(KvCacheMode::kOn, 4);
  expect_error({}, ok, "empty");
  expect_error({{}}, ok, "empty");
  expect_error({{1, 2}, {}}, ok, "prompt 1");
  expect_error({{1, 512}}, ok, "512");
  expect_error({{-1}}, ok, "-1");
  expect_error({Seq(90, 0, 1)}, GreedyOptions(KvCacheMode::kOn, 7), "context length");
  expect_error({{1}}, GreedyOptions(KvCacheMode::kOn, 0), "max_new_tokens");
  expect_error({{1}}, GreedyOptions(KvCacheMode::kOn, -5), "max_new_tokens");
  GenerateOptions bad = ok;
  bad.sampling.temperature = -1;
  expect_error({{1}}, bad, "temperature");
  bad = ok;
  bad.sampling.top_p = 0;
  expect_error({{1}}, bad, "top_p");
  EXPECT_FALSE(ParseKvCacheMode("maybe").ok());
}

}  // namespace generate_test
}  // namespace nanoserve
