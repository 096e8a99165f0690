#include "kv_cache/prompt_check.h"

#include "absl/strings/str_cat.h"

namespace nanoserve {

absl::Status ValidatePrompt(absl::Span<const int> prompt, int64_t vocab_size, int64_t max_tokens,
                            absl::string_view which) {
  if (prompt.empty()) return absl::InvalidArgumentError(absl::StrCat(which, "empty prompt"));
  if (static_cast<int64_t>(prompt.size()) > max_tokens) {
    return absl::InvalidArgumentError(absl::StrCat(which, "prompt of ", prompt.size(),
                                                   " tokens exceeds the limit of ", max_tokens));
  }
  for (int id : prompt) {
    if (id < 0 || id >= vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat(which, "token id ", id, " outside the vocabulary [0, ", vocab_size, ")"));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateGenerationLength(int64_t prompt_tokens, int64_t max_new_tokens,
                                      int64_t capacity, absl::string_view which) {
  if (max_new_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(which, "max_new_tokens ", max_new_tokens, " < 1"));
  }
  if (prompt_tokens > capacity || max_new_tokens > capacity - prompt_tokens) {
    return absl::InvalidArgumentError(
        absl::StrCat(which, "prompt (", prompt_tokens, " tokens) + max_new_tokens (",
                     max_new_tokens, ") exceeds the context length of ", capacity, " tokens"));
  }
  return absl::OkStatus();
}

}  // namespace nanoserve
