// The engine against a record made by code no one here wrote: HF
// transformers' GPT2LMHeadModel (its own save_pretrained checkpoint, its
// greedy generate, its logits) and tiktoken's gpt2 encoding. The record and
// the checkpoint were made by scripts/gpu/make_golden.py and live in
// tests/data/.
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/types.h>
#include <nlohmann/json.hpp>

#include "engine/checkpoint.h"
#include "engine/generate.h"
#include "engine/model.h"
#include "engine/tokenizer.h"
#include "tests/test_util/model.h"

namespace nanoserve {
namespace golden_test {

const char kDataDir[] = NANOSERVE_SOURCE_DIR "/tests/data";

nlohmann::json LoadRecord() {
  std::ifstream in(std::string(kDataDir) + "/hf_golden.json");
  EXPECT_TRUE(in.good()) << "missing " << kDataDir
                         << "/hf_golden.json (scripts/gpu/make_golden.py)";
  if (!in.good()) return nlohmann::json::object();
  return nlohmann::json::parse(in);
}

std::unique_ptr<Gpt2Model> LoadHfModel(AttentionKind attention) {
  auto ckpt = LoadCheckpoint(std::string(kDataDir) + "/hf_tiny_gpt2");
  EXPECT_TRUE(ckpt.ok()) << ckpt.status();
  if (!ckpt.ok()) return nullptr;
  ModelOptions options;
  options.device = testing::TestDevice();
  options.dtype = testing::TestDtype();
  options.attention = attention;
  auto model = Gpt2Model::Create(*ckpt, options);
  EXPECT_TRUE(model.ok()) << model.status();
  return model.ok() ? *std::move(model) : nullptr;
}

class GoldenTest : public ::testing::TestWithParam<AttentionKind> {
 protected:
  void SetUp() override {
    if (GetParam() == AttentionKind::kFused && !FusedAttentionAvailable()) {
      GTEST_SKIP() << "fused attention needs LibTorch 2.x";
    }
  }
};

TEST_P(GoldenTest, LastPositionLogitsMatchHf) {
  nlohmann::json record = LoadRecord();
  auto model = LoadHfModel(GetParam());
  ASSERT_NE(model, nullptr);
  ASSERT_FALSE(record["generations"].empty());
  // HF ran fp32 on the CPU; the logits here are of magnitude ~10.
  const double tolerance = testing::TestDtype() == torch::kFloat ? 1e-3 : 0.5;
  for (const auto& g : record["generations"]) {
    std::vector<int> prompt = g["prompt"].get<std::vector<int>>();
    std::vector<float> expected = g["last_logits"].get<std::vector<float>>();
    torch::Tensor logits = testing::FullLogits(*model, prompt)[prompt.size() - 1];  // (V,)
    ASSERT_EQ(logits.size(0), static_cast<int64_t>(expected.size()));
    const double diff = (logits - torch::tensor(expected)).abs().max().item<double>();
    EXPECT_LT(diff, tolerance) << "prompt of " << prompt.size() << " tokens";
  }
}

TEST_P(GoldenTest, GreedyContinuationsMatchHfInEveryCacheMode) {
  nlohmann::json record = LoadRecord();
  auto model = LoadHfModel(GetParam());
  ASSERT_NE(model, nullptr);
  Generator generator(model.get());
  for (const auto& g : record["generations"]) {
    std::vector<int> prompt = g["prompt"].get<std::vector<int>>();
    std::vector<int> expected = g["greedy"].get<std::vector<int>>();
    for (KvCacheMode mode : {KvCacheMode::kOff, KvCacheMode::kOn}) {
      SCOPED_TRACE(KvCacheModeName(mode));
      GenerateOptions options;
      options.kv_cache = mode;
      options.max_new_tokens = static_cast<int64_t>(expected.size());
      options.stop_at_end_of_text = false;
      auto result = generator.Generate({prompt}, options);
      ASSERT_TRUE(result.ok()) << result.status();
      const std::vector<int>& actual = result->sequences[0].output_ids;
      if (testing::TestDtype() == torch::kFloat) {
        EXPECT_EQ(actual, expected);
      } else {
        // In bf16/fp16 a near-tie of HF's fp32 logits may break the other way.
        testing::ExpectSameGreedy(*model, prompt, expected, actual);
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Attention, GoldenTest,
                         ::testing::Values(AttentionKind::kNaive, AttentionKind::kFused),
                         [](const auto& info) { return AttentionKindName(info.param); });

TEST(GoldenTokenizerTest, EncodingsMatchTiktoken) {
  nlohmann::json record = LoadRecord();
  ASSERT_TRUE(record.contains("tokenizations"));
  auto tokenizer = Gpt2Tokenizer::Load(NANOSERVE_SOURCE_DIR "/data/gpt2");
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  ASSERT_GE(record["tokenizations"].size(), 10u);
  for (const auto& t : record["tokenizations"]) {
    const std::string text = t["text"].get<std::string>();
    EXPECT_EQ((*tokenizer)->EncodeOrdinary(text), t["ids"].get<std::vector<int>>()) << text;
    EXPECT_EQ((*tokenizer)->Decode((*tokenizer)->EncodeOrdinary(text)).value(), text);
  }
}

}  // namespace golden_test
}  // namespace nanoserve
