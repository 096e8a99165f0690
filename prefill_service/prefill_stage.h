// The prefill stage as a library (no gRPC): a batch of prompts in, each
// prompt's first token and a lease on its cached pages out.
//
// PrefillStage runs the engine's prefix prefill plan (engine/prefill.h)
// against a PrefixStore: the KV store service through RemotePrefixStore in
// nanoserve-prefill, or a PrefixCache in this process. Prefixes shared
// within the batch are computed once; prefixes the store holds are loaded,
// not computed. When the store is unreachable or refuses, the batch is
// computed here, the outcome says so (store_status), and the call still
// succeeds.
//
// Calls are batched (PrefillBatcher, prefill_batcher.h): calls that arrive
// while a batch runs, or within batch_window of the first waiting call,
// run together as one batch of the plan, within the limits one call has,
// so a burst of requests sharing a system prompt computes it once. Only
// calls of one lease holder share a batch. Batches run one at a time (one
// model). Each call still gets its own prompts' outcome; if a merged batch
// fails as a whole, each of its calls runs again alone, so one call cannot
// fail another.
//
// Prefiller is what the decode stage needs of a prefill stage, wherever it
// runs: PrefillStage in this process, PrefillClient (prefill_client.h)
// across the network.
//
// Thread safety: thread-safe.
#ifndef NANOSERVE_PREFILL_SERVICE_PREFILL_STAGE_H_
#define NANOSERVE_PREFILL_SERVICE_PREFILL_STAGE_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "base/log_rate.h"
#include "base/metrics.h"
#include "engine/model.h"
#include "engine/prefill.h"
#include "engine/sampler.h"
#include "kv_cache/prefix_store.h"

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
  // The lease's pages in the store's shared pool, when prefill wrote them
  // in place (PrefixStore::Stored's): a caller that maps the same pool
  // reads them with no Fetch. Empty otherwise.
  PrefixStore::PoolPages pool_pages;
};

struct PrefillOutcome {
  std::vector<PrefilledPrompt> prompts;  // in request order
  // Prompt tokens run through the model for this call. A prefix shared
  // within the batch is computed once; in a batch of several calls each
  // call counts its prompts' own suffixes (each prompt's tokens beyond its
  // cached_tokens) plus a share of the shared prefixes computed for the
  // batch, in proportion to the tokens its prompts then reused from them.
  // Summed over a batch's calls: the tokens the batch computed.
  int64_t computed_tokens = 0;
  absl::Status store_status;  // OK, or why the store was not (fully) used
  // The batch's store calls and the rest of its run (each call of a batch
  // waited for all of it); total_ms is this call's own, waiting included.
  double store_ms = 0;
  double compute_ms = 0;
  double total_ms = 0;
  // The batch this call ran in: its calls (1: alone) and prompts.
  int64_t batch_calls = 1;
  int64_t batch_prompts = 0;
};

// Each prompt's first token, in request order (the engine's hook,
// engine/prefill.h).
using FirstTokens = FirstTokensReady;

// A prefill under way (Prefiller::Start).
class PendingPrefill {
 public:
  virtual ~PendingPrefill() = default;
  // Blocks until the prefill has ended; its outcome, as Prefill's. Once.
  virtual absl::StatusOr<PrefillOutcome> Wait() = 0;
  // The caller went away: a remote call is cancelled (Wait then says
  // CANCELLED, unless it had ended). Any thread, any time before the
  // handle goes; the default does nothing.
  virtual void Cancel() {}
};

class Prefiller {
 public:
  virtual ~Prefiller() = default;
  // Prefills `prompts` as one batch. INVALID_ARGUMENT for bad prompts or
  // sampling; DEADLINE_EXCEEDED if `deadline` passes first (no lease is
  // left held then); RESOURCE_EXHAUSTED or INTERNAL from the device.
  // `on_first` (may be null) is called at most once, before Prefill
  // returns, as soon as the first tokens are chosen: after the forward
  // pass, before the pages are stored, so a caller may stream them while
  // the store's calls run. An outcome then carries the same tokens. Prefill
  // may still fail after it: the tokens stay a valid choice from the
  // prompts' logits, and a caller that computes the prompts itself then
  // keeps them.
  virtual absl::StatusOr<PrefillOutcome> Prefill(absl::Span<const PrefillPrompt> prompts,
                                                 absl::Time deadline,
                                                 const FirstTokens& on_first) = 0;
  absl::StatusOr<PrefillOutcome> Prefill(absl::Span<const PrefillPrompt> prompts,
                                         absl::Time deadline) {
    return Prefill(prompts, deadline, nullptr);
  }
  // Prefill without waiting for it: Wait ends it. A remote prefill's
  // request is on its way when Start returns, so the caller's hand-off to
  // the thread that waits happens while it travels; `on_first` may then run
  // on another thread, before Start returns or before Wait is called, and
  // must not block. The default runs Prefill in Wait, on the waiting
  // thread. A pending prefill destroyed unwaited is waited for and its
  // leases abandoned.
  virtual std::unique_ptr<PendingPrefill> Start(std::vector<PrefillPrompt> prompts,
                                                absl::Time deadline, FirstTokens on_first);
  // Releases the leases of an outcome its caller will not use.
  virtual void Abandon(const PrefillOutcome& outcome) = 0;
};

struct PrefillStageOptions {
  // Prompt tokens per forward pass; 0 = all at once.
  int64_t prefill_chunk = 0;
  // Prompts one call, and one batch of calls, may carry. >= 1.
  int64_t max_prompts = 64;
  // Bound on a call's, and a batch's, K/V rows: prompts x the longest
  // prompt, in tokens.
  int64_t max_batch_tokens = 65536;
  // How long the first call to reach an idle stage waits for others to
  // join its batch (PrefillBatcherOptions::window); it adds up to this much
  // to a lone call's latency. Zero (the default: time to first token comes
  // first): calls share a batch only when they arrive while one runs. >= 0.
  absl::Duration batch_window = absl::ZeroDuration();
  // A batch that takes longer than this (from its start to its outcome) is
  // logged to stderr with when it began (wall clock, to set beside the
  // decode scheduler's slow turns), its calls, prompts and tokens, and where
  // its time went; 10 lines a second at most. Zero (the default): never.
  absl::Duration slow_batch = absl::ZeroDuration();
  // Rows kept from one batch to the next (KeptPrefillRows: max_prompts rows
  // over a pool of this many tokens), for batches that fit them when the
  // store's pool is not in this process; on a GPU their prefill graphs are
  // then captured once (at WarmUp) and replayed. -1: kDefaultKeptRowsTokens
  // on a GPU, none on the CPU; 0: none (rows per batch, eager passes).
  int64_t kept_rows_tokens = -1;
  static constexpr int64_t kDefaultKeptRowsTokens = 16384;
  // A batch whose prompts could reuse fewer tokens than this from the store
  // (each prompt's whole pages of its first len - 1 tokens, all told) is
  // computed without asking the store for a match, which is a round trip
  // before the first token (its pages are still stored). 0: always ask.
  // -1: measured on a GPU with a store (match_cost.h: the round trip as a
  // lone request pays it, over a token's prefill time), at WarmUp, or where the store did not
  // answer then, at the first batch's match; 0 on the CPU, where a token of a real model costs more
  // than a round trip, and until WarmUp. The service's flag defaults to -1.
  int64_t store_match_min_tokens = 0;
};

class PrefillBatcher;
struct PrefillCall;

class PrefillStage : public Prefiller {
 public:
  // `store` may be null: prompts are computed in full and nothing is stored.
  // `metrics` may be null. Nothing is owned; all must outlive the stage.
  PrefillStage(const Gpt2Model* model, PrefixStore* store, const PrefillStageOptions& options,
               MetricsRegistry* metrics);
  // Shutdown(), then waits for the calls still in the batcher to leave it.
  // REQUIRES: no new call starts; callers' threads are joined first
  // (Shutdown() makes those waiting for a batch return at once).
  ~PrefillStage() override;

  // INVALID_ARGUMENT naming the first bad prompt: see ValidatePrompt, plus
  // an empty batch, more than max_prompts, rows over max_batch_tokens, bad
  // sampling, a cache salt over kMaxCacheSaltBytes.
  absl::Status Validate(absl::Span<const PrefillPrompt> prompts) const;

  using Prefiller::Prefill;
  // Prefill(prompts, deadline, "", on_first).
  absl::StatusOr<PrefillOutcome> Prefill(absl::Span<const PrefillPrompt> prompts,
                                         absl::Time deadline, const FirstTokens& on_first) override;
  // As Prefiller::Prefill; the outcome's leases may be used at the store by
  // `lease_holder` too (the authenticated caller of the prefill service;
  // empty: only by this stage's identity). Blocks while the call waits for
  // its batch (see the class comment); UNAVAILABLE after Shutdown.
  // `on_first` runs on the batcher's thread.
  absl::StatusOr<PrefillOutcome> Prefill(absl::Span<const PrefillPrompt> prompts,
                                         absl::Time deadline, absl::string_view lease_holder,
                                         const FirstTokens& on_first = nullptr);
  void Abandon(const PrefillOutcome& outcome) override;

  // Runs engine/warm_up.h's shapes for this stage's batches (up to
  // max_prompts prompts, max_batch_tokens rows) through the engine, without
  // the store, before the service takes calls, and measures what a match
  // costs where store_match_min_tokens is -1 (logged to stderr; a store
  // not answering yet, as when the three services start side by side, is
  // timed by the first batch's match instead). Returns the milliseconds it
  // took, or the engine's error. REQUIRES: no call has started.
  absl::StatusOr<double> WarmUp();

  // The tokens a batch must be able to reuse for the store to be asked for
  // a match (PrefillStageOptions::store_match_min_tokens, resolved).
  int64_t store_match_min_tokens() const { return match_min_tokens_.load(); }

  // Refuses new calls and ends those waiting for a batch with UNAVAILABLE;
  // returns once the batch running (if any) is done. Idempotent.
  void Shutdown();

 private:
  // Runs one batch of calls (the batcher's RunBatch): merged into one Run,
  // or, if that fails, each call alone.
  void RunCalls(absl::Span<PrefillCall* const> calls);
  // Runs a validated batch; the leases of the outcome are the caller's.
  // Called on the batcher's thread only.
  // `on_first` as Prefiller::Prefill's, for the whole batch.
  absl::StatusOr<PrefillOutcome> Run(absl::Span<const PrefillPrompt> prompts,
                                     absl::string_view lease_holder, const FirstTokens& on_first);
  void CountBatch(absl::Span<PrefillCall* const> calls);
  // Logs the batch begun at `began` if it was slow (options_.slow_batch).
  // `first_ms`: when its first tokens went out, from `began` (< 0: never).
  void NoteBatch(absl::Span<PrefillCall* const> calls, absl::Time began, double first_ms,
                 const absl::StatusOr<PrefillOutcome>& outcome);
  void Count(const absl::StatusOr<PrefillOutcome>& outcome);
  // match_min_tokens_ from a match's round trip and token_us_, logged with
  // `when` it was timed.
  void SetMatchMinTokens(double match_ms, absl::string_view when);

  const Gpt2Model* model_;
  PrefixStore* store_;
  const PrefillStageOptions options_;

  OutcomeCounter calls_;
  struct Metrics {
    Counter* prompts = nullptr;
    Counter* cached_tokens = nullptr;
    Counter* computed_tokens = nullptr;
    Counter* store_fallbacks = nullptr;
    Histogram* latency_ms = nullptr;
    Histogram* queue_ms = nullptr;
    Histogram* batch_calls = nullptr;
    Histogram* batch_prompts = nullptr;
    Counter* batch_retries = nullptr;
    Counter* matches_skipped = nullptr;
    Counter* unleased_prompts = nullptr;
  } metrics_;
  // Resolved from options_.store_match_min_tokens (where -1: by WarmUp, or
  // by the first batch that matched, on the batcher's thread).
  std::atomic<int64_t> match_min_tokens_{0};
  // Where -1 and the store did not answer at WarmUp: a prompt token's time
  // (µs), to set the threshold by the first match a batch makes. WarmUp's,
  // then the batcher's thread.
  double token_us_ = 0;
  bool await_match_ = false;
  // Null when none are kept (options_.kept_rows_tokens), the store's pool is
  // here, or they could not be made (the stage then logged why). The
  // batcher's thread only (and WarmUp's, before).
  std::unique_ptr<KeptPrefillRows> kept_;
  // NoteBatch's rate limit (the batcher's thread only).
  LogRate slow_log_rate_{10};
  // Last: it stops (and its thread, which uses the members above, ends)
  // before they go.
  std::unique_ptr<PrefillBatcher> batcher_;
};

// Splits the outcome of one batch merged from several calls into one outcome
// per call: call i had prompts_per_call[i] of the batch's prompts (in order),
// whose lengths are prompt_lengths. Computed tokens are shared out as
// PrefillOutcome::computed_tokens says; the rest is the batch's.
// REQUIRES: the counts add up to batch.prompts.size() = prompt_lengths.size().
std::vector<PrefillOutcome> SplitBatchOutcome(const PrefillOutcome& batch,
                                              absl::Span<const int64_t> prompts_per_call,
                                              absl::Span<const int64_t> prompt_lengths);

}  // namespace nanoserve

#endif  // NANOSERVE_PREFILL_SERVICE_PREFILL_STAGE_H_
