// The checks every entry point (offline generation, the batch scheduler, the
// prefill service, the KV store) makes of a prompt, in one place, so that
// the same bad input gets the same INVALID_ARGUMENT everywhere.
#ifndef NANOSERVE_KV_CACHE_PROMPT_CHECK_H_
#define NANOSERVE_KV_CACHE_PROMPT_CHECK_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace nanoserve {

// INVALID_ARGUMENT naming the first problem: an empty prompt, more than
// `max_tokens` tokens, a token id outside [0, vocab_size). `which`
// ("prompt 3: ") starts the message.
absl::Status ValidatePrompt(absl::Span<const int> prompt, int64_t vocab_size, int64_t max_tokens,
                            absl::string_view which = "");

// INVALID_ARGUMENT unless max_new_tokens >= 1 and prompt_tokens +
// max_new_tokens <= capacity. Exact for any int64 values (no overflow).
// REQUIRES: 0 <= prompt_tokens.
absl::Status ValidateGenerationLength(int64_t prompt_tokens, int64_t max_new_tokens,
                                      int64_t capacity, absl::string_view which = "");

}  // namespace nanoserve

#endif  // NANOSERVE_KV_CACHE_PROMPT_CHECK_H_
