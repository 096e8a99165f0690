#include "prefill_service/prefill_stage.h"

#include <algorithm>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "engine/kv_cache.h"
#include "engine/prefill.h"
#include "engine/prompt_check.h"
#include "kv_store/torch_status.h"

namespace nanoserve {
namespace {

double MsSince(absl::Time start) { return absl::ToDoubleMilliseconds(absl::Now() - start); }

}  // namespace

PrefillStage::PrefillStage(const Gpt2Model* model, PrefixStore* store,
                           const PrefillStageOptions& options, MetricsRegistry* metrics)
    : model_(model),
      store_(store),
      options_(options),
      calls_(metrics, "nanoserve_prefill_requests_total", "Prefill calls by outcome.") {
  if (metrics == nullptr) return;
  metrics_.prompts = metrics->AddCounter("nanoserve_prefill_prompts_total", "Prompts prefilled.");
  metrics_.cached_tokens = metrics->AddCounter("nanoserve_prefill_cached_tokens_total",
                                               "Prompt tokens reused from the KV store.");
  metrics_.computed_tokens = metrics->AddCounter("nanoserve_prefill_computed_tokens_total",
                                                 "Prompt tokens run through the model.");
  metrics_.store_fallbacks =
      metrics->AddCounter("nanoserve_prefill_store_fallbacks_total",
                          "Batches computed without the KV store because it could not be used.");
  metrics_.latency_ms = metrics->AddHistogram("nanoserve_prefill_latency_ms",
                                              "Prefill call latency.", LatencyBucketsMs());
}

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
                                                 absl::string_view lease_holder) {
  const Gpt2Model& model = *model_;
  const int64_t n = static_cast<int64_t>(prompts.size());
  std::vector<std::vector<int>> tokens;
  std::vector<std::string> salts;
  int64_t longest = 0;
  for (const PrefillPrompt& p : prompts) {
    tokens.push_back(p.tokens);
    salts.push_back(p.cache_salt);
    longest = std::max<int64_t>(longest, p.tokens.size());
  }
  PrefillOutcome outcome;
  outcome.prompts.resize(n);
  // The leases are the caller's only once the outcome is returned.
  bool handed_over = false;
  absl::Cleanup release = [&] {
    if (!handed_over) Abandon(outcome);
  };
  const absl::Time start = absl::Now();
  // Rows over the store's own pool when it is in this process (prefix hits
  // read in place), else over a pool of their own.
  PrefixCache* shared = store_ != nullptr ? store_->SharedPool() : nullptr;
  absl::StatusOr<std::unique_ptr<KvCache>> cache = TorchResult("prefill", [&] {
    return shared != nullptr
               ? std::make_unique<KvCache>(shared, n, longest)
               : std::make_unique<KvCache>(model.config(), n, longest, model.options().dtype,
                                           model.options().device);
  });
  if (!cache.ok()) return cache.status();
  std::vector<torch::Tensor> logits;
  if (store_ == nullptr) {
    absl::StatusOr<std::vector<torch::Tensor>> computed = TorchResult(
        "prefill", [&] { return PrefillBatch(model, **cache, tokens, options_.prefill_chunk); });
    if (!computed.ok()) return computed.status();
    logits = *std::move(computed);
    for (const auto& t : tokens) outcome.computed_tokens += static_cast<int64_t>(t.size());
    outcome.store_status = absl::FailedPreconditionError("no kv store configured");
  } else {
    absl::StatusOr<PrefixPrefillResult> result =
        PrefixPrefill(model, *store_, options_.prefill_chunk)
            .Run(tokens, **cache, /*keep_leases=*/true, salts, lease_holder);
    if (!result.ok()) return result.status();
    for (int64_t r = 0; r < n; ++r) {
      outcome.prompts[r].lease_id = result->stored[r].lease_id;
      outcome.prompts[r].stored_tokens = result->stored[r].stored_tokens;
      outcome.prompts[r].cached_tokens = result->reused_tokens[r];
    }
    outcome.computed_tokens = result->computed_tokens;
    outcome.store_status = result->store_status;
    outcome.store_ms = result->store_ms;
    logits = std::move(result->logits);
  }
  absl::Status sampled = RunTorch("sampling the first tokens", [&] {
    for (int64_t r = 0; r < n; ++r) {
      outcome.prompts[r].first_token =
          static_cast<int>(Sampler(prompts[r].sampling).Sample(logits[r])[0]);
    }
  });
  if (!sampled.ok()) return sampled;
  outcome.compute_ms = MsSince(start) - outcome.store_ms;
  handed_over = true;
  return outcome;
}

absl::StatusOr<PrefillOutcome> PrefillStage::Prefill(absl::Span<const PrefillPrompt> prompts,
                                                     absl::Time deadline) {
  return Prefill(prompts, deadline, "");
}

absl::StatusOr<PrefillOutcome> PrefillStage::Prefill(absl::Span<const PrefillPrompt> prompts,
                                                     absl::Time deadline,
                                                     absl::string_view lease_holder) {
  const absl::Time start = absl::Now();
  absl::StatusOr<PrefillOutcome> outcome = absl::UnknownError("not run");
  if (absl::Status bad = Validate(prompts); !bad.ok()) {
    outcome = bad;
  } else {
    absl::MutexLock lock(&mu_);
    if (absl::Now() >= deadline) {
      outcome = absl::DeadlineExceededError("deadline passed while queued for prefill");
    } else {
      outcome = Run(prompts, lease_holder);
    }
  }
  if (outcome.ok() && absl::Now() >= deadline) {  // nobody will read the leases
    Abandon(*outcome);
    outcome = absl::DeadlineExceededError("deadline passed in prefill");
  }
  if (outcome.ok()) outcome->total_ms = MsSince(start);
  Count(outcome);
  return outcome;
}

void PrefillStage::Abandon(const PrefillOutcome& outcome) {
  if (store_ == nullptr) return;
  for (const PrefilledPrompt& p : outcome.prompts) store_->Release(p.lease_id).IgnoreError();
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
