// Autoregressive generation over a batch of prompts, in three modes:
//  - kOff:    Part A's plain loop: the whole sequence runs through the model
//             at every step (nanoGPT's generate, cropped to the context).
//  - kOn:     Part B: the prompt is prefilled into a preallocated KV cache
//             (optionally in chunks), then each step runs only the newest
//             token of every sequence.
//  - kPrefix: Part C: like kOn, but each prompt starts from the longest
//             prefix already cached in a PrefixCache, only the rest is
//             computed, and its K/V is inserted for later prompts.
// With greedy sampling all three produce the same tokens.
//
// Thread safety: a Generator is used by one thread at a time.
#ifndef NANOSERVE_ENGINE_GENERATE_H_
#define NANOSERVE_ENGINE_GENERATE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/decode_step.h"
#include "engine/device.h"
#include "engine/kv_cache.h"
#include "engine/model.h"
#include "engine/sampler.h"

namespace nanoserve {

class PrefixCache;

enum class KvCacheMode { kOff, kOn, kPrefix };

// "off", "on" or "prefix".
absl::StatusOr<KvCacheMode> ParseKvCacheMode(absl::string_view name);
std::string KvCacheModeName(KvCacheMode mode);

struct GenerateOptions {
  // Tokens to generate per prompt, >= 1. prompt + max_new_tokens must fit
  // the context (n_positions).
  int64_t max_new_tokens = 64;
  KvCacheMode kv_cache = KvCacheMode::kOn;
  SamplingOptions sampling;
  // Stop a sequence once it emits <|endoftext|> (the token is kept).
  bool stop_at_end_of_text = true;
  int end_of_text_id = 50256;
  // Prefill at most this many prompt tokens per forward pass; 0 = all at once.
  int64_t prefill_chunk = 0;
  // The decode step (kOn, kPrefix): cuda-graph on a GPU unless asked otherwise.
  DecodeKind decode = DecodeKind::kAuto;
  // The KV cache's rows hold at least this many tokens (0: the longest
  // prompt + max_new_tokens), so that a caller that runs shorter and longer
  // generations of one batch size with one Generator (a benchmark's short
  // warm-ups, then its timed runs) keeps one cache and its CUDA graphs.
  // 0 <= min_capacity <= n_positions.
  int64_t min_capacity = 0;
};

struct SequenceResult {
  std::vector<int> prompt_ids;
  std::vector<int> output_ids;
  std::string finish_reason;         // "stop" (end of text) or "length"
  int64_t cached_prompt_tokens = 0;  // reused from the prefix cache
};

struct GenerateStats {
  int64_t prompt_tokens = 0;           // asked for, all prompts
  int64_t prompt_tokens_computed = 0;  // ran through the model in prefill
  int64_t prompt_tokens_reused = 0;    // taken from the prefix cache
  int64_t output_tokens = 0;
  double prefill_ms = 0;  // includes prefix-cache lookups and copies
  double ttft_ms = 0;     // start to the first token of every sequence
  double total_ms = 0;
  double ms_per_output_token = 0;  // total_ms / output tokens of the longest sequence
  double decode_ms_per_step = 0;   // (total - ttft) / (steps - 1)
  double tokens_per_second = 0;    // all sequences' output tokens / total
  std::string decode_step;         // "reference" or "cuda-graph"; empty for kOff
  // Decode row-steps whose shared leading pages were attended once for
  // their group (DecodeStep::shared_prefix_row_steps: cuda-graph-cascade).
  int64_t shared_prefix_row_steps = 0;
  MemoryStats memory;
};

struct GenerateResult {
  std::vector<SequenceResult> sequences;
  GenerateStats stats;
};

// Called for each token as it is made: (prompt index, token id).
using TokenSink = std::function<void(int64_t row, int token)>;

// A Generator keeps its KV cache and decode step from one call to the next
// while the batch size and length stay the same (a CUDA graph is captured
// once, not per call), and frees them when they change.
class Generator {
 public:
  // prefix_cache is needed only for KvCacheMode::kPrefix; it must be built
  // for this model's shape, dtype and device. Neither is owned.
  explicit Generator(const Gpt2Model* model, PrefixCache* prefix_cache = nullptr)
      : model_(model), prefix_cache_(prefix_cache) {}

  // INVALID_ARGUMENT for an empty batch, an empty prompt, an unknown token
  // id, prompt + max_new_tokens over the context, bad options;
  // RESOURCE_EXHAUSTED when memory runs out; INTERNAL for other LibTorch
  // errors. Nothing is left half-done in the prefix cache on error.
  absl::StatusOr<GenerateResult> Generate(const std::vector<std::vector<int>>& prompts,
                                          const GenerateOptions& options,
                                          const TokenSink& sink = nullptr);

 private:
  absl::Status Validate(const std::vector<std::vector<int>>& prompts,
                        const GenerateOptions& options) const;
  absl::StatusOr<GenerateResult> Run(const std::vector<std::vector<int>>& prompts,
                                     const GenerateOptions& options, const TokenSink& sink);

  const Gpt2Model* model_;
  PrefixCache* prefix_cache_;
  // The last call's cache (rows = batch, capacity = longest prompt + new
  // tokens) and its decode step, of kind decode_kind_.
  std::unique_ptr<KvCache> cache_;
  std::unique_ptr<DecodeStep> decode_;
  DecodeKind decode_kind_ = DecodeKind::kAuto;
  bool cache_shares_pool_ = false;  // cache_ is over prefix_cache_'s pool
};

}  // namespace nanoserve

#endif  // NANOSERVE_ENGINE_GENERATE_H_
