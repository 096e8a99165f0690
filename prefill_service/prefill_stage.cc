#include "prefill_service/prefill_stage.h"

#include <algorithm>
#include <cstddef>
#include <cstdio>
#include <memory>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "base/first_token_trace.h"
#include "engine/prefill.h"
#include "engine/warm_up.h"
#include "kv_cache/prompt_check.h"
#include "prefill_service/match_cost.h"
#include "prefill_service/prefill_batcher.h"

namespace nanoserve {
namespace {

double MsSince(absl::Time start) { return absl::ToDoubleMilliseconds(absl::Now() - start); }

// Buckets for calls or prompts per batch: 1, 2, 4, ..., 1024.
std::vector<double> BatchSizeBuckets() {
  std::vector<double> bounds;
  for (double b = 1; b <= 1024; b *= 2) bounds.push_back(b);
  return bounds;
}

// Prefiller::Start's default: Prefill, run by Wait.
class DeferredPrefill final : public PendingPrefill {
 public:
  DeferredPrefill(Prefiller* prefiller, std::vector<PrefillPrompt> prompts, absl::Time deadline,
                  FirstTokens on_first)
      : prefiller_(prefiller),
        prompts_(std::move(prompts)),
        deadline_(deadline),
        on_first_(std::move(on_first)) {}
  // Unwaited, nothing ran: nothing to abandon.
  absl::StatusOr<PrefillOutcome> Wait() override {
    return prefiller_->Prefill(prompts_, deadline_, on_first_);
  }

 private:
  Prefiller* prefiller_;
  const std::vector<PrefillPrompt> prompts_;
  const absl::Time deadline_;
  const FirstTokens on_first_;
};

}  // namespace

std::unique_ptr<PendingPrefill> Prefiller::Start(std::vector<PrefillPrompt> prompts,
                                                 absl::Time deadline, FirstTokens on_first) {
  return std::make_unique<DeferredPrefill>(this, std::move(prompts), deadline, std::move(on_first));
}

PrefillStage::PrefillStage(const Gpt2Model* model, PrefixStore* store,
                           const PrefillStageOptions& options, MetricsRegistry* metrics)
    : model_(model),
      store_(store),
      options_(options),
      calls_(metrics, "nanoserve_prefill_requests_total", "Prefill calls by outcome.") {
  match_min_tokens_ = std::max<int64_t>(0, options.store_match_min_tokens);
  PrefillBatcherOptions batching;
  batching.window = options.batch_window;
  batching.max_prompts = options.max_prompts;
  batching.max_batch_tokens = options.max_batch_tokens;
  int64_t kept_tokens = options.kept_rows_tokens;
  if (kept_tokens < 0) {
    kept_tokens =
        model->options().device.is_cuda() ? PrefillStageOptions::kDefaultKeptRowsTokens : 0;
  }
  if (kept_tokens > 0 && (store == nullptr || store->SharedPool() == nullptr)) {
    absl::StatusOr<std::unique_ptr<KeptPrefillRows>> kept =
        KeptPrefillRows::Create(model, options.max_prompts, kept_tokens);
    if (kept.ok()) {
      kept_ = *std::move(kept);
    } else {
      std::fprintf(stderr, "nanoserve-prefill: no rows kept between batches (%s)\n",
                   kept.status().ToString().c_str());
    }
  }
  batcher_ = std::make_unique<PrefillBatcher>(
      batching, [this](absl::Span<PrefillCall* const> calls) { RunCalls(calls); });
  if (metrics == nullptr) return;
  metrics_.prompts = metrics->AddCounter("nanoserve_prefill_prompts_total", "Prompts prefilled.");
  metrics_.cached_tokens = metrics->AddCounter("nanoserve_prefill_cached_tokens_total",
                                               "Prompt tokens reused from the KV store.");
  metrics_.computed_tokens = metrics->AddCounter("nanoserve_prefill_computed_tokens_total",
                                                 "Prompt tokens run through the model.");
  metrics_.store_fallbacks =
      metrics->AddCounter("nanoserve_prefill_store_fallbacks_total",
                          "Calls computed without the KV store because it could not be used.");
  metrics_.latency_ms = metrics->AddHistogram("nanoserve_prefill_latency_ms",
                                              "Prefill call latency.", LatencyBucketsMs());
  metrics_.queue_ms =
      metrics->AddHistogram("nanoserve_prefill_queue_ms",
                            "Time a call waited for its batch to start.", LatencyBucketsMs());
  metrics_.batch_calls = metrics->AddHistogram("nanoserve_prefill_batch_calls",
                                               "Calls per prefill batch.", BatchSizeBuckets());
  metrics_.batch_prompts = metrics->AddHistogram("nanoserve_prefill_batch_prompts",
                                                 "Prompts per prefill batch.", BatchSizeBuckets());
  metrics_.batch_retries = metrics->AddCounter(
      "nanoserve_prefill_batch_retries_total",
      "Batches of several calls that failed as a whole, whose calls then ran alone.");
  metrics_.unleased_prompts = metrics->AddCounter(
      "nanoserve_prefill_unleased_prompts_total",
      "Prompts whose cached prefix came out of the KV store's pool by its page index, with no "
      "match.");
  metrics_.matches_skipped = metrics->AddCounter(
      "nanoserve_prefill_store_matches_skipped_total",
      "Batches computed without asking the KV store for a match: they could reuse fewer tokens "
      "than --store_match_min_tokens.");
  metrics->AddGauge(
      "nanoserve_prefill_store_match_min_tokens",
      "Tokens a batch must be able to reuse for the KV store to be asked for a match.",
      [this] { return static_cast<double>(match_min_tokens_.load()); });
}

PrefillStage::~PrefillStage() = default;

absl::Status PrefillStage::Validate(absl::Span<const PrefillPrompt> prompts) const {
  const Gpt2Config& config = model_->config();
  const int64_t n = static_cast<int64_t>(prompts.size());
  if (n == 0) return absl::InvalidArgumentError("no prompts");
  if (n > options_.max_prompts) {
    return absl::InvalidArgumentError(
        absl::StrCat(n, " prompts in one call, more than the limit of ", options_.max_prompts));
  }
  int64_t longest = 0;
  for (int64_t i = 0; i < n; ++i) {
    const std::string which = n > 1 ? absl::StrCat("prompt ", i, ": ") : "";
    const PrefillPrompt& p = prompts[i];
    if (absl::Status s = ValidatePrompt(p.tokens, config.vocab_size, config.n_positions, which);
        !s.ok()) {
      return s;
    }
    if (absl::Status s = ValidateSamplingOptions(p.sampling); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(which, s.message()));
    }
    if (absl::Status s = ValidateCacheSalt(p.cache_salt); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(which, s.message()));
    }
    longest = std::max<int64_t>(longest, p.tokens.size());
  }
  if (n * longest > options_.max_batch_tokens) {
    return absl::InvalidArgumentError(absl::StrCat(n, " prompts of up to ", longest,
                                                   " tokens exceed the batch limit of ",
                                                   options_.max_batch_tokens, " tokens"));
  }
  return absl::OkStatus();
}

absl::StatusOr<PrefillOutcome> PrefillStage::Run(absl::Span<const PrefillPrompt> prompts,
                                                 absl::string_view lease_holder,
                                                 const FirstTokens& on_first) {
  const int64_t n = static_cast<int64_t>(prompts.size());
  std::vector<std::vector<int>> tokens;
  std::vector<std::string> salts;
  std::vector<SamplingOptions> sampling;
  for (const PrefillPrompt& p : prompts) {
    tokens.push_back(p.tokens);
    salts.push_back(p.cache_salt);
    sampling.push_back(p.sampling);
  }
  PrefillOutcome outcome;
  outcome.prompts.resize(n);
  const absl::Time start = absl::Now();
  // The leases in `result` are the caller's once it is OK.
  PrefillAndSampleOptions run;
  run.chunk = options_.prefill_chunk;
  run.cache_salts = salts;
  run.lease_holder = lease_holder;
  run.on_first = on_first;
  run.kept = kept_.get();
  run.min_match_tokens = match_min_tokens_.load();
  absl::StatusOr<SampledPrefill> result = PrefillAndSample(*model_, store_, tokens, sampling, run);
  if (!result.ok()) return result.status();
  const PrefixPrefillResult& prefill = result->prefill;
  if (store_ != nullptr && !prefill.store_asked && metrics_.matches_skipped != nullptr) {
    metrics_.matches_skipped->Increment();
  }
  if (metrics_.unleased_prompts != nullptr)
    metrics_.unleased_prompts->Increment(prefill.unleased_rows);
  // Timed by a batch that called the match (one its rows' lease-free loads
  // served whole made none).
  if (await_match_ && prefill.match_called && prefill.store_status.ok()) {
    await_match_ = false;
    SetMatchMinTokens(prefill.match_ms, "the first batch's match");
  }
  for (int64_t r = 0; r < n; ++r) {
    outcome.prompts[r].first_token = result->first_tokens[r];
    outcome.prompts[r].lease_id = prefill.stored[r].lease_id;
    outcome.prompts[r].stored_tokens = prefill.stored[r].stored_tokens;
    outcome.prompts[r].cached_tokens = prefill.reused_tokens[r];
    outcome.prompts[r].pool_pages = prefill.stored[r].pool_pages;
  }
  outcome.computed_tokens = prefill.computed_tokens;
  outcome.store_status = store_ == nullptr ? absl::FailedPreconditionError("no kv store configured")
                                           : prefill.store_status;
  outcome.store_ms = prefill.store_ms;
  outcome.compute_ms = MsSince(start) - outcome.store_ms;
  outcome.batch_prompts = n;
  return outcome;
}

absl::StatusOr<PrefillOutcome> PrefillStage::Prefill(absl::Span<const PrefillPrompt> prompts,
                                                     absl::Time deadline,
                                                     const FirstTokens& on_first) {
  return Prefill(prompts, deadline, "", on_first);
}

absl::StatusOr<PrefillOutcome> PrefillStage::Prefill(absl::Span<const PrefillPrompt> prompts,
                                                     absl::Time deadline,
                                                     absl::string_view lease_holder,
                                                     const FirstTokens& on_first) {
  const absl::Time start = absl::Now();
  absl::StatusOr<PrefillOutcome> outcome = absl::UnknownError("not run");
  if (absl::Status bad = Validate(prompts); !bad.ok()) {
    outcome = bad;
  } else {
    outcome = batcher_->Submit(prompts, lease_holder, deadline, on_first);
  }
  if (outcome.ok() && absl::Now() >= deadline) {  // nobody will read the leases
    Abandon(*outcome);
    outcome = absl::DeadlineExceededError("deadline passed in prefill");
  }
  if (outcome.ok()) outcome->total_ms = MsSince(start);
  Count(outcome);
  return outcome;
}

void PrefillStage::Shutdown() { batcher_->Shutdown(); }

absl::StatusOr<double> PrefillStage::WarmUp() {
  const absl::Time start = absl::Now();
  const Gpt2Config& config = model_->config();
  // A batch's rows, at most half the engine's bound on one pass's tokens.
  const int64_t max_tokens = std::min(options_.max_batch_tokens, kMaxPrefillBatchTokens / 2);
  for (const WarmUpShape& shape :
       WarmUpShapes(options_.max_prompts, max_tokens, config.n_positions)) {
    const std::vector<std::vector<int>> prompts = WarmUpPrompts(shape, config.vocab_size);
    const std::vector<SamplingOptions> sampling(prompts.size());
    PrefillAndSampleOptions run;
    run.chunk = options_.prefill_chunk;
    run.kept = kept_.get();
    absl::StatusOr<SampledPrefill> out =
        PrefillAndSample(*model_, /*store=*/nullptr, prompts, sampling, run);
    if (!out.ok()) return out.status();
  }
  // The kept rows' step captures its prefill graphs for every bucket now.
  if (kept_ != nullptr) {
    absl::Status prepared = kept_->Prepare();
    if (!prepared.ok()) return prepared;
  }
  if (options_.store_match_min_tokens < 0 && store_ != nullptr &&
      model_->options().device.is_cuda()) {
    absl::StatusOr<double> token_us =
        MeasurePromptTokenUs(*model_, options_.prefill_chunk, kept_.get());
    if (!token_us.ok()) return token_us.status();
    token_us_ = *token_us;
    absl::StatusOr<double> match_ms = MeasureMatchMs(*model_, *store_);
    if (match_ms.ok()) {
      // Back to back too, for the log: what a busy store's match costs.
      absl::StatusOr<double> busy_ms = MeasureMatchMs(*model_, *store_, absl::ZeroDuration());
      SetMatchMinTokens(
          *match_ms,
          absl::StrFormat("at the warm-up, each after %lld ms idle as a lone request finds the "
                          "store; back to back %.3f ms",
                          static_cast<long long>(absl::ToInt64Milliseconds(kLoneRequestIdle)),
                          busy_ms.ok() ? *busy_ms : -1.0));
    } else {
      await_match_ = true;
      std::fprintf(stderr,
                   "nanoserve-prefill: the kv store did not answer at the warm-up (%s): every "
                   "batch asks it for a match until the first one is timed\n",
                   match_ms.status().ToString().c_str());
    }
  }
  return MsSince(start);
}

void PrefillStage::SetMatchMinTokens(double match_ms, absl::string_view when) {
  match_min_tokens_ = MatchMinTokens(match_ms, token_us_, model_->config().n_positions);
  std::fprintf(stderr,
               "nanoserve-prefill: a match at the kv store costs %.3f ms (%s), a prompt token "
               "%.2f us: batches that could reuse fewer than %lld tokens are computed without "
               "asking it (--store_match_min_tokens)\n",
               match_ms, std::string(when).c_str(), token_us_,
               static_cast<long long>(match_min_tokens_.load()));
}

void PrefillStage::RunCalls(absl::Span<PrefillCall* const> calls) {
  TraceFirstToken("prefill_batch");
  CountBatch(calls);
  const absl::Time began = absl::Now();
  double first_ms = -1;  // when the batch's first tokens went out
  const absl::string_view lease_holder = calls[0]->lease_holder;
  if (calls.size() == 1) {
    PrefillCall* call = calls[0];
    absl::StatusOr<PrefillOutcome> outcome =
        Run(call->prompts, lease_holder, [&](absl::Span<const int> first) {
          first_ms = MsSince(began);
          TraceFirstToken("prefill_first_token");
          call->SendFirstTokens(first);
        });
    NoteBatch(calls, began, first_ms, outcome);
    call->Settle(std::move(outcome));
    return;
  }
  std::vector<PrefillPrompt> merged;
  std::vector<int64_t> prompts_per_call;
  std::vector<int64_t> prompt_lengths;
  for (const PrefillCall* call : calls) {
    merged.insert(merged.end(), call->prompts.begin(), call->prompts.end());
    prompts_per_call.push_back(static_cast<int64_t>(call->prompts.size()));
    for (const PrefillPrompt& p : call->prompts) {
      prompt_lengths.push_back(static_cast<int64_t>(p.tokens.size()));
    }
  }
  // The batch's first tokens, each call's share to its caller.
  auto send_first = [&](absl::Span<const int> first) {
    first_ms = MsSince(began);
    size_t r = 0;
    for (PrefillCall* call : calls) {
      call->SendFirstTokens(first.subspan(r, call->prompts.size()));
      r += call->prompts.size();
    }
  };
  absl::StatusOr<PrefillOutcome> outcome = Run(merged, lease_holder, send_first);
  NoteBatch(calls, began, first_ms, outcome);
  if (outcome.ok()) {
    std::vector<PrefillOutcome> split =
        SplitBatchOutcome(*outcome, prompts_per_call, prompt_lengths);
    for (size_t i = 0; i < calls.size(); ++i) calls[i]->Settle(std::move(split[i]));
    return;
  }
  // Whatever failed the batch may be one call's doing: each runs alone, so
  // that one call cannot fail another.
  if (metrics_.batch_retries != nullptr) metrics_.batch_retries->Increment();
  for (PrefillCall* call : calls) {
    call->Settle(absl::Now() >= call->deadline
                     ? absl::StatusOr<PrefillOutcome>(
                           absl::DeadlineExceededError("deadline passed in prefill"))
                     : Run(call->prompts, lease_holder,
                           [call](absl::Span<const int> first) { call->SendFirstTokens(first); }));
  }
}

std::vector<PrefillOutcome> SplitBatchOutcome(const PrefillOutcome& batch,
                                              absl::Span<const int64_t> prompts_per_call,
                                              absl::Span<const int64_t> prompt_lengths) {
  const size_t calls = prompts_per_call.size();
  // Each call's own suffixes (the plan computes each prompt beyond what it
  // loads from the store), and the tokens it reused: its weight in the
  // prefixes the batch computed for several prompts.
  std::vector<int64_t> own(calls, 0);
  std::vector<int64_t> reused(calls, 0);
  int64_t own_total = 0;
  int64_t reused_total = 0;
  for (size_t i = 0, r = 0; i < calls; ++i) {
    for (int64_t k = 0; k < prompts_per_call[i]; ++k, ++r) {
      own[i] += prompt_lengths[r] - batch.prompts[r].cached_tokens;
      reused[i] += batch.prompts[r].cached_tokens;
    }
    own_total += own[i];
    reused_total += reused[i];
  }
  const int64_t shared = std::max<int64_t>(0, batch.computed_tokens - own_total);
  std::vector<PrefillOutcome> out(calls);
  int64_t handed_out = 0;
  for (size_t i = 0, r = 0; i < calls; ++i) {
    PrefillOutcome& o = out[i];
    o.prompts.assign(batch.prompts.begin() + static_cast<std::ptrdiff_t>(r),
                     batch.prompts.begin() + static_cast<std::ptrdiff_t>(r + prompts_per_call[i]));
    r += static_cast<size_t>(prompts_per_call[i]);
    const int64_t share =
        reused_total > 0 ? shared * reused[i] / reused_total : shared / static_cast<int64_t>(calls);
    o.computed_tokens = own[i] + share;
    handed_out += share;
    o.store_status = batch.store_status;
    o.store_ms = batch.store_ms;
    o.compute_ms = batch.compute_ms;
    o.batch_calls = static_cast<int64_t>(calls);
    o.batch_prompts = static_cast<int64_t>(batch.prompts.size());
  }
  // What integer division left over goes to the call that reused most, so
  // that the calls' counts add up to the batch's.
  const size_t most =
      static_cast<size_t>(std::max_element(reused.begin(), reused.end()) - reused.begin());
  out[most].computed_tokens += shared - handed_out;
  return out;
}

void PrefillStage::Abandon(const PrefillOutcome& outcome) {
  if (store_ == nullptr) return;
  for (const PrefilledPrompt& p : outcome.prompts) store_->Release(p.lease_id).IgnoreError();
}

void PrefillStage::CountBatch(absl::Span<PrefillCall* const> calls) {
  if (metrics_.batch_calls == nullptr) return;
  int64_t prompts = 0;
  for (const PrefillCall* call : calls) {
    prompts += static_cast<int64_t>(call->prompts.size());
    metrics_.queue_ms->Observe(absl::ToDoubleMilliseconds(call->taken - call->arrival));
  }
  metrics_.batch_calls->Observe(static_cast<double>(calls.size()));
  metrics_.batch_prompts->Observe(static_cast<double>(prompts));
}

void PrefillStage::NoteBatch(absl::Span<PrefillCall* const> calls, absl::Time began,
                             double first_ms, const absl::StatusOr<PrefillOutcome>& outcome) {
  if (options_.slow_batch <= absl::ZeroDuration()) return;
  const absl::Time now = absl::Now();
  if (now - began < options_.slow_batch) return;
  int64_t skipped = 0;
  if (!slow_log_rate_.Allow(now, &skipped)) return;
  int64_t prompts = 0, longest = 0;
  double waited = 0;  // the longest any call of the batch waited for it
  for (const PrefillCall* call : calls) {
    prompts += static_cast<int64_t>(call->prompts.size());
    for (const PrefillPrompt& p : call->prompts) {
      longest = std::max<int64_t>(longest, static_cast<int64_t>(p.tokens.size()));
    }
    waited = std::max(waited, absl::ToDoubleMilliseconds(call->taken - call->arrival));
  }
  const std::string unlogged =
      skipped > 0 ? absl::StrCat(" (", skipped, " slow batches before not logged)") : "";
  const std::string what =
      outcome.ok()
          ? absl::StrFormat("%lld prompt tokens computed, the store's calls %.1f ms",
                            static_cast<long long>(outcome->computed_tokens), outcome->store_ms)
          : absl::StrCat("failed: ", outcome.status().ToString());
  std::fprintf(stderr,
               "prefill: a batch at %s took %.1f ms (over %lld): %zu calls, %lld prompts of up to "
               "%lld tokens (the longest wait for it %.1f ms), first tokens out at %.1f ms, "
               "%s%s\n",
               absl::FormatTime("%H:%M:%E3S", began, absl::UTCTimeZone()).c_str(),
               absl::ToDoubleMilliseconds(now - began),
               static_cast<long long>(absl::ToInt64Milliseconds(options_.slow_batch)), calls.size(),
               static_cast<long long>(prompts), static_cast<long long>(longest), waited, first_ms,
               what.c_str(), unlogged.c_str());
}

void PrefillStage::Count(const absl::StatusOr<PrefillOutcome>& outcome) {
  calls_.Count(outcome.status());
  if (!outcome.ok() || metrics_.prompts == nullptr) return;
  metrics_.latency_ms->Observe(outcome->total_ms);
  metrics_.prompts->Increment(static_cast<double>(outcome->prompts.size()));
  for (const PrefilledPrompt& p : outcome->prompts) {
    metrics_.cached_tokens->Increment(static_cast<double>(p.cached_tokens));
  }
  metrics_.computed_tokens->Increment(static_cast<double>(outcome->computed_tokens));
  if (!outcome->store_status.ok()) metrics_.store_fallbacks->Increment();
}

}  // namespace nanoserve
