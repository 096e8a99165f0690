// What `nanoserve load` sends: one prompt and output length per request,
// drawn from seeded distributions (synthetic token ids) or read from a file,
// a share of them starting with one common prefix.
//
// Lengths: "128" (fixed) or "64:256" (uniform, both ends included).
//
// Prompts file: one request per non-empty line. A line starting with '{' is
// a JSON object {"prompt": "text" or [token ids], "max_tokens": N} (
// max_tokens optional: drawn from the output length otherwise); any other
// line is the prompt's text. Requests take the file's prompts in order,
// starting over when there are fewer lines than requests.
//
// Thread-compatible: plain functions and value types.
#ifndef NANOSERVE_BENCH_LOAD_WORKLOAD_H_
#define NANOSERVE_BENCH_LOAD_WORKLOAD_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace nanoserve {

// Lengths in tokens, uniform over [min, max].
struct LengthRange {
  int64_t min = 128;
  int64_t max = 128;
};

// "N" (min = max = N) or "A:B" with 1 <= A <= B; INVALID_ARGUMENT otherwise.
absl::StatusOr<LengthRange> ParseLengthRange(absl::string_view spec);

// One request of a load run. Exactly one of prompt_ids and prompt_text is
// set (text only from a prompts file).
struct LoadPrompt {
  std::vector<int> prompt_ids;
  std::string prompt_text;
  int64_t max_tokens = 0;      // output tokens asked for (end of text does not stop them)
  bool shared_prefix = false;  // starts with the run's common prefix
};

struct WorkloadOptions {
  int64_t requests = 100;  // >= 1
  // Synthetic prompts: token ids uniform over [0, vocab_size), the length
  // drawn from prompt_len; ignored with a prompts file.
  LengthRange prompt_len;
  LengthRange output_len;  // max_tokens, unless a file line gives it
  int64_t vocab_size = 50257;
  // round(shared_prefix_share x requests) synthetic prompts, chosen at
  // random, begin with the same shared_prefix_len tokens (the rest is
  // their own). REQUIRES 0 <= share <= 1, shared_prefix_len <=
  // prompt_len.min; not with a prompts file.
  int64_t shared_prefix_len = 0;
  double shared_prefix_share = 0;
  std::string prompts_file;  // see the top of this file; "" = synthetic
  uint64_t seed = 0;         // the same seed gives the same requests
};

// The run's requests, in order. INVALID_ARGUMENT for options out of range
// or a malformed prompts file (naming its line); NOT_FOUND for a missing
// file.
absl::StatusOr<std::vector<LoadPrompt>> BuildWorkload(const WorkloadOptions& options);

// The prompts of a prompts file's text (as BuildWorkload reads it); lines
// without max_tokens get 0.
absl::StatusOr<std::vector<LoadPrompt>> ParsePromptsFile(absl::string_view content);

}  // namespace nanoserve

#endif  // NANOSERVE_BENCH_LOAD_WORKLOAD_H_
