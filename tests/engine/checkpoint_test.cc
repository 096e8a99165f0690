#include "engine/checkpoint.h"

#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/types.h>
#include <torch/utils.h>
#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "tests/test_util/model.h"

namespace nanoserve {
namespace checkpoint_test {

// TinyConfig(): 2 layers, 4 heads, 64 wide, a vocabulary of 512, context 96.
using ::nanoserve::testing::TinyConfig;
using ::testing::HasSubstr;

// A directory path under the test temp dir, unique to this process, whose
// tree is removed on destruction. POSIX calls, not std::filesystem: see
// checkpoint.cc on the pip LibTorch.
class ScopedTempDir {
 public:
  explicit ScopedTempDir(const std::string& name)
      : path_(::testing::TempDir() + "/checkpoint_test_" + name + "_" +
              std::to_string(::getpid())) {}
  ~ScopedTempDir() {
    ::nftw(
        path_.c_str(),
        [](const char* path, const struct stat*, int, struct FTW*) { return std::remove(path); },
        16, FTW_DEPTH | FTW_PHYS);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

bool PathExists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

void ExpectSameWeights(const TensorMap& a, const TensorMap& b) {
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [name, tensor] : a) {
    SCOPED_TRACE(name);
    ASSERT_EQ(b.count(name), 1u);
    EXPECT_EQ(b.at(name).scalar_type(), tensor.scalar_type());
    EXPECT_TRUE(torch::equal(b.at(name), tensor));
  }
}

// Writes `tensors` as dir/model.safetensors, with or without a config.json.
void WriteRawCheckpoint(const std::string& dir, const TensorMap& tensors,
                        const Gpt2Config* config) {
  ASSERT_EQ(::mkdir(dir.c_str(), 0755), 0) << dir;
  if (config != nullptr) {
    std::ofstream(dir + "/config.json") << nlohmann::json{
        {"n_layer", config->n_layer},
        {"n_head", config->n_head},
        {"n_embd", config->n_embd},
        {"vocab_size", config->vocab_size},
        {"n_positions", config->n_positions}}.dump();
  }
  ASSERT_TRUE(WriteSafetensors(dir + "/model.safetensors", tensors).ok());
}

TEST(Gpt2ParameterShapesTest, CountsMatchConfig) {
  for (const char* preset : {"gpt2", "gpt2-xl"}) {
    const Gpt2Config config = *Gpt2Preset(preset);
    const auto shapes = Gpt2ParameterShapes(config);
    EXPECT_EQ(shapes.size(), 2 + 12 * config.n_layer + 2);
    int64_t total = 0;
    for (const auto& [name, shape] : shapes) {
      int64_t numel = 1;
      for (int64_t d : shape) numel *= d;
      total += numel;
    }
    EXPECT_EQ(total, config.num_parameters());
  }
  const auto shapes = Gpt2ParameterShapes(TinyConfig());
  EXPECT_EQ(shapes.front().first, "wte.weight");
  EXPECT_EQ(shapes.front().second, (std::vector<int64_t>{512, 64}));
  EXPECT_EQ(shapes[4].first, "h.0.attn.c_attn.weight");
  EXPECT_EQ(shapes[4].second, (std::vector<int64_t>{64, 192}));
  EXPECT_EQ(shapes[12].first, "h.0.mlp.c_proj.weight");
  EXPECT_EQ(shapes[12].second, (std::vector<int64_t>{256, 64}));
  EXPECT_EQ(shapes.back().first, "ln_f.bias");
}

TEST(RandomCheckpointTest, ShapesAndInitialisation) {
  const Gpt2Config config = TinyConfig();
  const Checkpoint checkpoint = RandomCheckpoint(config, 1);
  EXPECT_TRUE(ValidateGpt2Weights(config, checkpoint.weights).ok());
  for (const auto& [name, shape] : Gpt2ParameterShapes(config)) {
    const torch::Tensor& t = checkpoint.weights.at(name);
    EXPECT_EQ(t.sizes(), c10::IntArrayRef(shape)) << name;
    EXPECT_EQ(t.scalar_type(), torch::kFloat32) << name;
  }
  const TensorMap& w = checkpoint.weights;
  EXPECT_TRUE(torch::equal(w.at("h.1.ln_1.weight"), torch::ones({64})));
  EXPECT_TRUE(torch::equal(w.at("ln_f.bias"), torch::zeros({64})));
  EXPECT_TRUE(torch::equal(w.at("h.0.mlp.c_fc.bias"), torch::zeros({256})));
  // 6144 to 32768 samples each: the std estimate is within a few percent.
  for (const char* name :
       {"wte.weight", "wpe.weight", "h.0.attn.c_attn.weight", "h.1.mlp.c_fc.weight"}) {
    EXPECT_NEAR(w.at(name).std().item<double>(), 0.02, 0.002) << name;
    EXPECT_NEAR(w.at(name).mean().item<double>(), 0.0, 0.002) << name;
  }
  const double proj_std = 0.02 / std::sqrt(2.0 * config.n_layer);  // 0.01
  for (const char* name : {"h.0.mlp.c_proj.weight", "h.1.attn.c_proj.weight"}) {
    EXPECT_NEAR(w.at(name).std().item<double>(), proj_std, 0.0012) << name;
  }
}

TEST(RandomCheckpointTest, DeterministicPerSeed) {
  const Checkpoint a = RandomCheckpoint(TinyConfig(), 7);
  torch::manual_seed(123);  // the global seed plays no part
  const Checkpoint b = RandomCheckpoint(TinyConfig(), 7);
  ExpectSameWeights(a.weights, b.weights);
  const Checkpoint c = RandomCheckpoint(TinyConfig(), 8);
  EXPECT_FALSE(torch::equal(a.weights.at("wte.weight"), c.weights.at("wte.weight")));
  EXPECT_FALSE(
      torch::equal(a.weights.at("h.1.mlp.c_proj.weight"), c.weights.at("h.1.mlp.c_proj.weight")));
}

TEST(RandomCheckpointTest, LargeTensorsDeterministicAndDistinctChunks) {
  // wte has 2.56M elements: several chunks filled in parallel.
  Gpt2Config config = TinyConfig();
  config.vocab_size = 40000;
  config.n_embd = 64;
  config.n_layer = 1;
  const torch::Tensor a = RandomCheckpoint(config, 11).weights.at("wte.weight");
  const torch::Tensor b = RandomCheckpoint(config, 11).weights.at("wte.weight");
  EXPECT_TRUE(torch::equal(a, b));
  EXPECT_NEAR(a.std().item<double>(), 0.02, 0.0002);
  // No two chunks repeat one stream: the first rows of each 1M block differ.
  const torch::Tensor flat = a.view({-1});
  EXPECT_FALSE(torch::equal(flat.slice(0, 0, 1000), flat.slice(0, 1 << 20, (1 << 20) + 1000)));
}

class SaveLoadTest : public ::testing::TestWithParam<std::string> {};

TEST_P(SaveLoadTest, RoundTrip) {
  const ScopedTempDir temp("round_trip");
  const std::string dir = temp.path() + "/nested";
  const Checkpoint saved = RandomCheckpoint(TinyConfig(), 3);
  ASSERT_TRUE(SaveCheckpoint(dir, saved, GetParam()).ok());

  // Stored names carry the prefix; config.json is HF's.
  absl::StatusOr<TensorMap> raw = ReadSafetensors(dir + "/model.safetensors");
  ASSERT_TRUE(raw.ok()) << raw.status();
  EXPECT_EQ(raw->count(GetParam() + "h.1.mlp.c_fc.weight"), 1u);
  std::ifstream config_in(dir + "/config.json");
  const nlohmann::json config_json = nlohmann::json::parse(config_in);
  EXPECT_EQ(config_json["model_type"], "gpt2");
  EXPECT_EQ(config_json["architectures"][0], "GPT2LMHeadModel");
  EXPECT_EQ(config_json["n_ctx"], 96);
  EXPECT_EQ(config_json["activation_function"], "gelu_new");

  for (const std::string& path : {dir, dir + "/model.safetensors"}) {
    SCOPED_TRACE(path);
    absl::StatusOr<Checkpoint> loaded = LoadCheckpoint(path);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    EXPECT_EQ(loaded->config.n_layer, 2);
    EXPECT_EQ(loaded->config.n_head, 4);
    EXPECT_EQ(loaded->config.n_embd, 64);
    EXPECT_EQ(loaded->config.vocab_size, 512);
    EXPECT_EQ(loaded->config.n_positions, 96);
    ExpectSameWeights(saved.weights, loaded->weights);
  }
}

INSTANTIATE_TEST_SUITE_P(Prefixes, SaveLoadTest, ::testing::Values("", "transformer."));

TEST(LoadCheckpointTest, KeepsStoredDtype) {
  Checkpoint checkpoint = RandomCheckpoint(TinyConfig(), 4);
  for (auto& [name, tensor] : checkpoint.weights) {
    tensor = tensor.to(torch::kBFloat16);
  }
  const ScopedTempDir temp("bf16");
  const std::string& dir = temp.path();
  ASSERT_TRUE(SaveCheckpoint(dir, checkpoint).ok());
  absl::StatusOr<Checkpoint> loaded = LoadCheckpoint(dir);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->weights.at("wte.weight").scalar_type(), torch::kBFloat16);
  ExpectSameWeights(checkpoint.weights, loaded->weights);
}

TEST(LoadCheckpointTest, IgnoresHfBuffersAndTiedHead) {
  const Gpt2Config config = TinyConfig();
  const Checkpoint checkpoint = RandomCheckpoint(config, 5);
  TensorMap stored;
  for (const auto& [name, tensor] : checkpoint.weights) {
    stored.emplace("transformer." + name, tensor);
  }
  stored.emplace("transformer.h.0.attn.bias", torch::ones({1, 1, 96, 96}).tril());
  stored.emplace("transformer.h.1.attn.masked_bias", torch::tensor(-1e4f));
  stored.emplace("lm_head.weight", torch::zeros({512, 64}));
  const ScopedTempDir temp("hf_buffers");
  const std::string& dir = temp.path();
  WriteRawCheckpoint(dir, stored, &config);
  absl::StatusOr<Checkpoint> loaded = LoadCheckpoint(dir);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ExpectSameWeights(checkpoint.weights, loaded->weights);
}

TEST(LoadCheckpointTest, RejectsUntiedHeadShape) {
  const Gpt2Config config = TinyConfig();
  TensorMap stored = RandomCheckpoint(config, 5).weights;
  stored.emplace("lm_head.weight", torch::zeros({511, 64}));
  const ScopedTempDir temp("lm_head");
  const std::string& dir = temp.path();
  WriteRawCheckpoint(dir, stored, &config);
  absl::StatusOr<Checkpoint> loaded = LoadCheckpoint(dir);
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(loaded.status().message(), HasSubstr("lm_head.weight has shape [511, 64]"));
}

TEST(LoadCheckpointTest, InfersConfigOfPresetSizes) {
  // gpt2's n_embd and n_layer over a tiny vocabulary and context.
  Gpt2Config config = *Gpt2Preset("gpt2");
  config.vocab_size = 10;
  config.n_positions = 8;
  const ScopedTempDir temp("infer");
  const std::string& dir = temp.path();
  WriteRawCheckpoint(dir, RandomCheckpoint(config, 6).weights, nullptr);
  absl::StatusOr<Checkpoint> loaded = LoadCheckpoint(dir);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->config.n_layer, 12);
  EXPECT_EQ(loaded->config.n_head, 12);
  EXPECT_EQ(loaded->config.n_embd, 768);
  EXPECT_EQ(loaded->config.vocab_size, 10);
  EXPECT_EQ(loaded->config.n_positions, 8);
}

TEST(LoadCheckpointTest, CannotInferHeadsOfUnknownSize) {
  const ScopedTempDir temp("no_infer");
  const std::string& dir = temp.path();
  WriteRawCheckpoint(dir, RandomCheckpoint(TinyConfig(), 6).weights, nullptr);
  absl::StatusOr<Checkpoint> loaded = LoadCheckpoint(dir);
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(loaded.status().message(), HasSubstr("n_head cannot be inferred"));
}

// Loading `tensors` with TinyConfig's config.json fails naming `substring`.
void ExpectLoadError(const std::string& name, const TensorMap& tensors,
                     const std::string& substring, const Gpt2Config& config = TinyConfig()) {
  const ScopedTempDir temp(name);
  const std::string& dir = temp.path();
  WriteRawCheckpoint(dir, tensors, &config);
  absl::StatusOr<Checkpoint> loaded = LoadCheckpoint(dir);
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(loaded.status().message(), HasSubstr(substring));
  EXPECT_THAT(loaded.status().message(), HasSubstr("model.safetensors"));
}

TEST(LoadCheckpointTest, MissingTensor) {
  TensorMap tensors = RandomCheckpoint(TinyConfig(), 1).weights;
  tensors.erase("h.1.mlp.c_fc.bias");
  ExpectLoadError("missing", tensors, "missing tensor h.1.mlp.c_fc.bias (expected [256])");
}

TEST(LoadCheckpointTest, WrongShape) {
  TensorMap tensors = RandomCheckpoint(TinyConfig(), 1).weights;
  tensors["h.0.attn.c_attn.weight"] = torch::zeros({192, 64});
  ExpectLoadError("wrong_shape", tensors,
                  "tensor h.0.attn.c_attn.weight has shape [192, 64], "
                  "expected [64, 192]");
}

TEST(LoadCheckpointTest, UnexpectedTensor) {
  TensorMap tensors = RandomCheckpoint(TinyConfig(), 1).weights;
  tensors["h.0.attn.extra"] = torch::zeros({3});
  ExpectLoadError("unexpected", tensors, "unexpected tensor h.0.attn.extra");
}

TEST(LoadCheckpointTest, CAttnBiasIsNotABuffer) {
  // Only the exact buffer names are dropped: a c_attn.bias of the wrong
  // shape is still checked.
  TensorMap tensors = RandomCheckpoint(TinyConfig(), 1).weights;
  tensors["h.0.attn.c_attn.bias"] = torch::zeros({1, 1, 64, 64});
  ExpectLoadError("c_attn_bias", tensors, "tensor h.0.attn.c_attn.bias has shape [1, 1, 64, 64]");
}

TEST(LoadCheckpointTest, ConfigDoesNotMatchTensors) {
  Gpt2Config three_layers = TinyConfig();
  three_layers.n_layer = 3;
  ExpectLoadError("more_layers", RandomCheckpoint(TinyConfig(), 1).weights,
                  "missing tensor h.2.ln_1.weight", three_layers);
  Gpt2Config wider = TinyConfig();
  wider.n_embd = 128;
  ExpectLoadError("wider", RandomCheckpoint(TinyConfig(), 1).weights,
                  "tensor wte.weight has shape [512, 64], expected [512, 128]", wider);
}

TEST(LoadCheckpointTest, DuplicatePrefixedName) {
  TensorMap tensors = RandomCheckpoint(TinyConfig(), 1).weights;
  tensors["transformer.wte.weight"] = tensors.at("wte.weight");
  ExpectLoadError("duplicate", tensors, "wte.weight is stored both with and without");
}

TEST(LoadCheckpointTest, MissingCheckpoint) {
  absl::StatusOr<Checkpoint> loaded = LoadCheckpoint(ScopedTempDir("does_not_exist").path());
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(loaded.status().message(), HasSubstr("does_not_exist"));
}

TEST(SaveCheckpointTest, RejectsBadInput) {
  const Checkpoint checkpoint = RandomCheckpoint(TinyConfig(), 1);
  EXPECT_EQ(SaveCheckpoint(ScopedTempDir("bad_prefix").path(), checkpoint, "model.").code(),
            absl::StatusCode::kInvalidArgument);
  Checkpoint missing = checkpoint;
  missing.weights.erase("ln_f.weight");
  const ScopedTempDir temp("bad_weights");
  const std::string& dir = temp.path();
  const absl::Status status = SaveCheckpoint(dir, missing);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("missing tensor ln_f.weight"));
  EXPECT_FALSE(PathExists(dir));
}

}  // namespace checkpoint_test
}  // namespace nanoserve
