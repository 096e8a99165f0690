// What asking the KV store for a match costs a prefill, against what a
// match can save: PrefillStageOptions::store_match_min_tokens = -1 (auto).
//
// A match is a round trip to the store before the forward pass, on the way
// to the first token; what it can save is the compute of the tokens it
// finds. On a GPU a short prompt computes faster than the round trip takes
// (GPT-2 124M on an H100: a prompt token 1-2 µs beyond a 16-token pass, a
// match over gRPC 0.18-0.23 ms back to back), so a batch that could reuse
// fewer tokens than a round trip's worth is computed without asking.
//
// The round trip is timed as a lone request pays it: after the store and
// this process have been idle a while. Then the threads on both sides are
// asleep and each wake-up costs more than the call's own work: on the
// 2-core development VM a unary call over loopback takes 0.16 ms back to
// back, 0.28 ms after 1 ms idle, 0.42 after 5, 0.65 after 20, and a match
// inside a lone prefill 0.61 ms where the back-to-back probes said
// 0.13-0.17. Busy batches share one match among their prompts, which
// clears the threshold however it was timed.
//
// Thread safety: not thread safe (the measures run the engine; call them
// before the stage takes calls).
#ifndef NANOSERVE_PREFILL_SERVICE_MATCH_COST_H_
#define NANOSERVE_PREFILL_SERVICE_MATCH_COST_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
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

// The median of 7 one-page matches against `store`, in milliseconds, each
// after `idle` without a call (kLoneRequestIdle: as a lone request finds
// the store; zero: back to back). A namespace of their own, so nothing is
// found; their leases are released. Errors: the store's (its layout or a
// match).
inline constexpr absl::Duration kLoneRequestIdle = absl::Milliseconds(20);
absl::StatusOr<double> MeasureMatchMs(const Gpt2Model& model, PrefixStore& store,
                                      absl::Duration idle = kLoneRequestIdle);

// match_ms over token_us, rounded up, within [0, n_positions]; n_positions
// where a token costs nothing measurable.
int64_t MatchMinTokens(double match_ms, double token_us, int64_t n_positions);

}  // namespace nanoserve

#endif  // NANOSERVE_PREFILL_SERVICE_MATCH_COST_H_
