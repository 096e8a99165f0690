// What asking the KV store for a match costs a prefill, against what a
// match can save: PrefillStageOptions::store_match_min_tokens = -1 (auto).
//
// A match is a round trip to the store before the forward pass, on the way
// to the first token; what it can save is the compute of the tokens it
// finds. On a GPU a short prompt computes faster than the round trip takes
// (GPT-2 124M on an H100: a prompt token 1-2 µs beyond a 16-token pass, a
// match over gRPC 0.18-0.23 ms, so 100-250 tokens), so a batch that could
// reuse fewer tokens than a round trip's worth is computed without asking.
//
// Thread safety: not thread safe (the measures run the engine; call them
// before the stage takes calls).
#ifndef NANOSERVE_PREFILL_SERVICE_MATCH_COST_H_
#define NANOSERVE_PREFILL_SERVICE_MATCH_COST_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "engine/model.h"
#include "engine/prefill.h"
#include "kv_cache/prefix_store.h"

namespace nanoserve {

// Microseconds a prompt token adds to a single prompt's prefill: prompts of
// 16 and 272 tokens (within n_positions), each run 5 times after a warm-up
// run, as batches run (PrefillAndSample without a store, through `kept` if
// set; `chunk` as the stage's). Errors: the engine's.
absl::StatusOr<double> MeasurePromptTokenUs(const Gpt2Model& model, int64_t chunk,
                                            KeptPrefillRows* kept);

// The median of 7 one-page matches against `store`, in milliseconds (a
// namespace of their own, so nothing is found; their leases are released).
// Errors: the store's (its layout or a match).
absl::StatusOr<double> MeasureMatchMs(const Gpt2Model& model, PrefixStore& store);

// match_ms over token_us, rounded up, within [0, n_positions]; n_positions
// where a token costs nothing measurable.
int64_t MatchMinTokens(double match_ms, double token_us, int64_t n_positions);

}  // namespace nanoserve

#endif  // NANOSERVE_PREFILL_SERVICE_MATCH_COST_H_
