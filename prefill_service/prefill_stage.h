// The prefill stage as a library (no gRPC): a batch of prompts in, each
// prompt's first token and a lease on its cached pages out.
//
// PrefillStage runs the engine's prefix prefill plan (engine/prefill.h)
// against a PrefixStore: the KV store service through RemotePrefixStore in
// nanoserve-prefill, or a PrefixCache in this process. Prefixes shared
// within the batch are computed once; prefixes the store holds are loaded,
// not computed. When the store is unreachable or refuses, the batch is
// computed here, the outcome says so (store_status), and the call still
// succeeds. Batches run one at a time (one model).
//
// Prefiller is what the decode stage needs of a prefill stage, wherever it
// runs: PrefillStage in this process, PrefillClient (prefill_client.h)
// across the network.
//
// Thread safety: thread-safe.
#ifndef NANOSERVE_PREFILL_SERVICE_PREFILL_STAGE_H_
#define NANOSERVE_PREFILL_SERVICE_PREFILL_STAGE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "engine/model.h"
#include "engine/sampler.h"
#include "kv_store/prefix_store.h"
#include "rpc/metrics.h"

namespace nanoserve {

struct PrefillPrompt {
  std::vector<int> tokens;   // >= 1
  SamplingOptions sampling;  // chooses the first token
  // The cache namespace (kv_store/prefix_cache.h): prefixes are reused from
  // and stored under it only. At most kMaxCacheSaltBytes.
  std::string cache_salt;
};

struct PrefilledPrompt {
  int first_token = -1;
  // Pins the prompt's first stored_tokens (whole pages) in the store;
  // PrefixStore::kNoLease when nothing was stored.
  uint64_t lease_id = PrefixStore::kNoLease;
  int64_t stored_tokens = 0;
  int64_t cached_tokens = 0;  // loaded from the store for this prompt
};

struct PrefillOutcome {
  std::vector<PrefilledPrompt> prompts;  // in request order
  int64_t computed_tokens = 0;           // run through the model; shared prefixes once
  absl::Status store_status;             // OK, or why the store was not (fully) used
  double store_ms = 0;
  double compute_ms = 0;
  double total_ms = 0;
};

class Prefiller {
 public:
  virtual ~Prefiller() = default;
  // Prefills `prompts` as one batch. INVALID_ARGUMENT for bad prompts or
  // sampling; DEADLINE_EXCEEDED if `deadline` passes first (no lease is
  // left held then); RESOURCE_EXHAUSTED or INTERNAL from the device.
  virtual absl::StatusOr<PrefillOutcome> Prefill(absl::Span<const PrefillPrompt> prompts,
                                                 absl::Time deadline) = 0;
  // Releases the leases of an outcome its caller will not use.
  virtual void Abandon(const PrefillOutcome& outcome) = 0;
};

struct PrefillStageOptions {
  // Prompt tokens per forward pass; 0 = all at once.
  int64_t prefill_chunk = 0;
  // Prompts one call may carry. >= 1.
  int64_t max_prompts = 64;
  // Bound on a call's K/V rows: prompts x the longest prompt, in tokens.
  int64_t max_batch_tokens = 65536;
};

class PrefillStage : public Prefiller {
 public:
  // `store` may be null: prompts are computed in full and nothing is stored.
  // `metrics` may be null. Nothing is owned; all must outlive the stage.
  PrefillStage(const Gpt2Model* model, PrefixStore* store, const PrefillStageOptions& options,
               MetricsRegistry* metrics);

  // INVALID_ARGUMENT naming the first bad prompt: see ValidatePrompt, plus
  // an empty batch, more than max_prompts, rows over max_batch_tokens, bad
  // sampling, a cache salt over kMaxCacheSaltBytes.
  absl::Status Validate(absl::Span<const PrefillPrompt> prompts) const;

  // Prefill(prompts, deadline, "").
  absl::StatusOr<PrefillOutcome> Prefill(absl::Span<const PrefillPrompt> prompts,
                                         absl::Time deadline) override ABSL_LOCKS_EXCLUDED(mu_);
  // As Prefiller::Prefill; the outcome's leases may be used at the store by
  // `lease_holder` too (the authenticated caller of the prefill service;
  // empty: only by this stage's identity).
  absl::StatusOr<PrefillOutcome> Prefill(absl::Span<const PrefillPrompt> prompts,
                                         absl::Time deadline, absl::string_view lease_holder)
      ABSL_LOCKS_EXCLUDED(mu_);
  void Abandon(const PrefillOutcome& outcome) override;

 private:
  // Runs a validated batch; the leases of the outcome are the caller's.
  absl::StatusOr<PrefillOutcome> Run(absl::Span<const PrefillPrompt> prompts,
                                     absl::string_view lease_holder)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Count(const absl::StatusOr<PrefillOutcome>& outcome);

  const Gpt2Model* model_;
  PrefixStore* store_;
  const PrefillStageOptions options_;
  absl::Mutex mu_;  // one batch at a time

  OutcomeCounter calls_;
  struct Metrics {
    Counter* prompts = nullptr;
    Counter* cached_tokens = nullptr;
    Counter* computed_tokens = nullptr;
    Counter* store_fallbacks = nullptr;
    Histogram* latency_ms = nullptr;
  } metrics_;
};

}  // namespace nanoserve

#endif  // NANOSERVE_PREFILL_SERVICE_PREFILL_STAGE_H_
