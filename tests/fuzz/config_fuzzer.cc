// Fuzzes the config.json reader (engine/config.h): the input is the file's
// text. Any input gives a status; a config that parses has every size in
// [1, 2^24], n_embd divisible by n_head and a positive epsilon, and the size
// computations the engine makes of it (head_dim, num_parameters) stay in
// range (UBSan reports a signed overflow).
#include <cstddef>
#include <cstdint>

#include "absl/strings/string_view.h"
#include "engine/config.h"
#include "tests/fuzz/fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  constexpr int64_t kMaxDimension = int64_t{1} << 24;
  absl::StatusOr<nanoserve::Gpt2Config> config =
      nanoserve::Gpt2ConfigFromJson(absl::string_view(reinterpret_cast<const char*>(data), size));
  if (!config.ok()) {
    FUZZ_CHECK(config.status().code() == absl::StatusCode::kInvalidArgument);
    return 0;
  }
  for (int64_t v :
       {config->n_layer, config->n_head, config->n_embd, config->vocab_size, config->n_positions}) {
    FUZZ_CHECK(v >= 1 && v <= kMaxDimension);
  }
  FUZZ_CHECK(config->n_embd % config->n_head == 0);
  FUZZ_CHECK(config->head_dim() * config->n_head == config->n_embd);
  FUZZ_CHECK(config->layer_norm_epsilon > 0);
  FUZZ_CHECK(config->num_parameters() > 0);
  return 0;
}
