// GPT-2 model hyper-parameters: the four HF presets or a config.json.
#ifndef NANOSERVE_ENGINE_CONFIG_H_
#define NANOSERVE_ENGINE_CONFIG_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace nanoserve {

// Shape of a GPT-2 model. Field names follow HF's GPT2Config.
struct Gpt2Config {
  int64_t n_layer = 12;
  int64_t n_head = 12;
  int64_t n_embd = 768;
  int64_t vocab_size = 50257;
  int64_t n_positions = 1024;  // context length
  double layer_norm_epsilon = 1e-5;

  int64_t head_dim() const { return n_embd / n_head; }
  // Number of parameters, counting the tied lm_head once.
  int64_t num_parameters() const;
};

// "gpt2" (124M), "gpt2-medium" (355M), "gpt2-large" (774M), "gpt2-xl" (1.5B).
// INVALID_ARGUMENT for any other name.
absl::StatusOr<Gpt2Config> Gpt2Preset(absl::string_view name);

// Parses HF's config.json text (n_layer, n_head, n_embd, vocab_size,
// n_positions or n_ctx, layer_norm_epsilon; other keys are ignored). Missing
// fields take GPT-2's defaults; n_positions wins over n_ctx when both are
// present. Malformed JSON, a non-object, non-integer sizes or inconsistent
// values (n_embd not divisible by n_head, sizes outside [1, 2^24], more
// parameters than an int64 counts, a non-positive epsilon) give
// INVALID_ARGUMENT.
absl::StatusOr<Gpt2Config> Gpt2ConfigFromJson(absl::string_view json_text);

// Reads and parses a config.json file; NOT_FOUND if it does not exist.
// Parse errors are those of Gpt2ConfigFromJson, prefixed with `path`.
absl::StatusOr<Gpt2Config> LoadGpt2Config(const std::string& path);

}  // namespace nanoserve

#endif  // NANOSERVE_ENGINE_CONFIG_H_
