// Fuzzes request validation: what the prefill service does with a
// v1::PrefillRequest before any compute (PrefillPromptsFromProto, then
// PrefillStage::Validate, which calls ValidatePrompt,
// ValidateSamplingOptions and ValidateCacheSalt), and
// ValidateGenerationLength. Input: two
// little-endian int64 (max_new_tokens, capacity), then a serialized
// PrefillRequest.
//   - Validate accepts exactly the batches a plain restatement of its
//     contract accepts;
//   - ValidateGenerationLength is exact for any int64 (checked in 128 bits);
//   - sampling options that validate can be used: a Sampler made from them
//     picks a token of finite logits without throwing.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include <google/protobuf/stubs/logging.h>
#include <torch/types.h>
#include <torch/utils.h>

#include "absl/time/time.h"
#include "engine/checkpoint.h"
#include "engine/model.h"
#include "engine/sampler.h"
#include "kv_cache/prefix_cache.h"
#include "kv_cache/prompt_check.h"
#include "prefill_service/prefill_proto.h"
#include "prefill_service/prefill_stage.h"
#include "tests/fuzz/fuzz_check.h"

namespace nanoserve {
namespace {

constexpr int64_t kVocab = 64, kPositions = 32, kMaxPrompts = 4, kMaxBatchTokens = 64;

// A model whose only use is its config: Validate reads nothing else.
const Gpt2Model& TinyModel() {
  static const Gpt2Model* model = [] {
    Gpt2Config config;
    config.n_layer = 1, config.n_head = 1, config.n_embd = 8;
    config.vocab_size = kVocab, config.n_positions = kPositions;
    absl::StatusOr<std::unique_ptr<Gpt2Model>> made =
        Gpt2Model::Create(RandomCheckpoint(config, /*seed=*/1), ModelOptions{});
    if (!made.ok()) std::fprintf(stderr, "%s\n", made.status().ToString().c_str()), std::exit(1);
    return made->release();
  }();
  return *model;
}

// Validate's contract, restated.
bool ShouldAccept(const std::vector<PrefillPrompt>& prompts) {
  if (prompts.empty() || static_cast<int64_t>(prompts.size()) > kMaxPrompts) return false;
  int64_t longest = 0;
  for (const PrefillPrompt& p : prompts) {
    if (p.tokens.empty() || static_cast<int64_t>(p.tokens.size()) > kPositions) return false;
    if (static_cast<int64_t>(p.cache_salt.size()) > kMaxCacheSaltBytes) return false;
    for (int id : p.tokens) {
      if (id < 0 || id >= kVocab) return false;
    }
    const SamplingOptions& s = p.sampling;
    const bool temperature_ok = s.temperature == 0 || (s.temperature >= kMinTemperature &&
                                                       s.temperature <= kMaxTemperature);
    if (!(temperature_ok && s.top_k >= 0 && s.top_p >= kMinTopP && s.top_p <= 1)) return false;
    longest = std::max<int64_t>(longest, p.tokens.size());
  }
  return static_cast<int64_t>(prompts.size()) * longest <= kMaxBatchTokens;
}

void CheckSamplerRuns(const SamplingOptions& options) {
  static const torch::Tensor logits = [] {
    torch::manual_seed(0);
    return torch::randn({1, kVocab}) * 10;  // (1, V)
  }();
  Sampler sampler(options);
  const absl::StatusOr<std::vector<int64_t>> chosen = sampler.Sample(logits);
  FUZZ_CHECK(chosen.ok() && chosen->size() == 1 && (*chosen)[0] >= 0 && (*chosen)[0] < kVocab);
}

PrefillStageOptions StageOptions() {
  PrefillStageOptions options;
  options.max_prompts = kMaxPrompts;
  options.max_batch_tokens = kMaxBatchTokens;
  return options;
}

void Run(const uint8_t* data, size_t size) {
  static const PrefillStage stage(&TinyModel(), /*store=*/nullptr, StageOptions(),
                                  /*metrics=*/nullptr);
  if (size < 16) return;
  int64_t max_new_tokens, capacity;
  std::memcpy(&max_new_tokens, data, 8);
  std::memcpy(&capacity, data + 8, 8);
  // Protobuf logs each string field that is not UTF-8; inputs do that often.
  const google::protobuf::LogSilencer quiet;
  v1::PrefillRequest request;
  if (!request.ParseFromArray(data + 16, static_cast<int>(size - 16))) return;

  const std::vector<PrefillPrompt> prompts = PrefillPromptsFromProto(request);
  const absl::Status status = stage.Validate(prompts);
  FUZZ_CHECK(status.ok() == ShouldAccept(prompts));
  FUZZ_CHECK(status.ok() || status.code() == absl::StatusCode::kInvalidArgument);

  for (const PrefillPrompt& p : prompts) {
    const int64_t n = static_cast<int64_t>(p.tokens.size());
    const bool fits = max_new_tokens >= 1 &&
                      static_cast<__int128>(n) + max_new_tokens <= static_cast<__int128>(capacity);
    FUZZ_CHECK(ValidateGenerationLength(n, max_new_tokens, capacity).ok() == fits);
    if (ValidateSamplingOptions(p.sampling).ok()) CheckSamplerRuns(p.sampling);
  }
}

}  // namespace
}  // namespace nanoserve

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  nanoserve::Run(data, size);
  return 0;
}
