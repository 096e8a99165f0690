#include "engine/config.h"

#include <fstream>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/status/status.h"
#include "tests/test_util/temp_path.h"

namespace nanoserve {
namespace config_test {

using ::testing::HasSubstr;

TEST(Gpt2PresetTest, KnownSizes) {
  struct Case {
    const char* name;
    int64_t n_layer, n_head, n_embd, num_parameters;
  };
  // Parameter counts of HF's models with the tied head counted once.
  for (const Case& c :
       {Case{"gpt2", 12, 12, 768, 124439808}, Case{"gpt2-medium", 24, 16, 1024, 354823168},
        Case{"gpt2-large", 36, 20, 1280, 774030080}, Case{"gpt2-xl", 48, 25, 1600, 1557611200}}) {
    SCOPED_TRACE(c.name);
    absl::StatusOr<Gpt2Config> config = Gpt2Preset(c.name);
    ASSERT_TRUE(config.ok()) << config.status();
    EXPECT_EQ(config->n_layer, c.n_layer);
    EXPECT_EQ(config->n_head, c.n_head);
    EXPECT_EQ(config->n_embd, c.n_embd);
    EXPECT_EQ(config->vocab_size, 50257);
    EXPECT_EQ(config->n_positions, 1024);
    EXPECT_EQ(config->head_dim(), 64);
    EXPECT_EQ(config->num_parameters(), c.num_parameters);
  }
}

TEST(Gpt2PresetTest, UnknownName) {
  absl::StatusOr<Gpt2Config> config = Gpt2Preset("gpt3");
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(config.status().message(), HasSubstr("gpt3"));
}

TEST(Gpt2ConfigFromJsonTest, ParsesHfConfig) {
  absl::StatusOr<Gpt2Config> config = Gpt2ConfigFromJson(R"({
      "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"],
      "n_layer": 2, "n_head": 4, "n_embd": 32, "vocab_size": 100,
      "n_positions": 64, "layer_norm_epsilon": 1e-6,
      "activation_function": "gelu_new"})");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->n_layer, 2);
  EXPECT_EQ(config->n_head, 4);
  EXPECT_EQ(config->n_embd, 32);
  EXPECT_EQ(config->vocab_size, 100);
  EXPECT_EQ(config->n_positions, 64);
  EXPECT_DOUBLE_EQ(config->layer_norm_epsilon, 1e-6);
  EXPECT_EQ(config->head_dim(), 8);
}

TEST(Gpt2ConfigFromJsonTest, MissingFieldsTakeDefaults) {
  absl::StatusOr<Gpt2Config> config = Gpt2ConfigFromJson("{}");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->n_layer, 12);
  EXPECT_EQ(config->n_embd, 768);
  EXPECT_EQ(config->vocab_size, 50257);
  EXPECT_EQ(config->n_positions, 1024);
  EXPECT_DOUBLE_EQ(config->layer_norm_epsilon, 1e-5);
}

TEST(Gpt2ConfigFromJsonTest, NCtxIsAnAliasForNPositions) {
  absl::StatusOr<Gpt2Config> config = Gpt2ConfigFromJson(R"({"n_ctx": 256})");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->n_positions, 256);
  // n_positions wins when both are given.
  config = Gpt2ConfigFromJson(R"({"n_ctx": 256, "n_positions": 128})");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->n_positions, 128);
}

TEST(Gpt2ConfigFromJsonTest, Malformed) {
  struct Case {
    const char* json;
    const char* message;
  };
  for (const Case& c : {
           Case{"{\"n_layer\": 2", "not valid JSON"},
           Case{"", "not valid JSON"},
           Case{"[1, 2]", "must be a JSON object"},
           Case{R"({"n_layer": "two"})", "n_layer"},
           Case{R"({"n_embd": 32.5})", "n_embd"},
           Case{R"({"vocab_size": 0})", "vocab_size"},
           Case{R"({"n_head": -4})", "n_head"},
           Case{R"({"n_positions": 99999999999})", "n_positions"},
           Case{R"({"layer_norm_epsilon": 0})", "layer_norm_epsilon"},
           Case{R"({"layer_norm_epsilon": 1e30})", "layer_norm_epsilon"},
           // Absurd sizes are refused before anything is allocated.
           Case{R"({"n_layer": 16000000})", "n_layer"},
           Case{R"({"n_embd": 1048576, "n_head": 16})", "parameters"},
           // Found with tests/fuzz/config_fuzzer: sizes within their limits
           // whose parameter count overflowed int64 in num_parameters().
           Case{R"({"n_layer": 16777216, "n_embd": 16777216, "n_head": 1})", "parameters"},
       }) {
    SCOPED_TRACE(c.json);
    absl::StatusOr<Gpt2Config> config = Gpt2ConfigFromJson(c.json);
    EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(config.status().message(), HasSubstr(c.message));
  }
}

TEST(Gpt2ConfigFromJsonTest, InconsistentHeads) {
  absl::StatusOr<Gpt2Config> config = Gpt2ConfigFromJson(R"({"n_embd": 32, "n_head": 5})");
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(config.status().message(), HasSubstr("not divisible"));
}

TEST(LoadGpt2ConfigTest, ReadsFile) {
  const std::string path = ::nanoserve::testing::ProcessTempPath("config_test_config.json");
  std::ofstream(path) << R"({"n_layer": 2, "n_head": 4, "n_embd": 32})";
  absl::StatusOr<Gpt2Config> config = LoadGpt2Config(path);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->n_layer, 2);
  EXPECT_EQ(config->n_embd, 32);
}

TEST(LoadGpt2ConfigTest, ParseErrorNamesFile) {
  const std::string path = ::nanoserve::testing::ProcessTempPath("config_test_bad.json");
  std::ofstream(path) << "not json";
  absl::StatusOr<Gpt2Config> config = LoadGpt2Config(path);
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(config.status().message(), HasSubstr(path));
}

TEST(LoadGpt2ConfigTest, MissingFileIsNotFound) {
  const std::string path = ::nanoserve::testing::ProcessTempPath("no_such_config.json");
  absl::StatusOr<Gpt2Config> config = LoadGpt2Config(path);
  EXPECT_EQ(config.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(config.status().message(), HasSubstr(path));
}

}  // namespace config_test
}  // namespace nanoserve
