#include "decode_service/decode_stage.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/first_token_trace.h"
#include "decode_service/stop_matcher.h"
#include "kv_cache/page_layout.h"

namespace nanoserve {

class DecodeStage::Call {
 public:
  Call(GenerateParams params, absl::Time deadline, std::shared_ptr<GenerateEvents> events,
       const Gpt2Tokenizer& tokenizer)
      : params(std::move(params)),
        deadline(deadline),
        arrived(absl::Now()),
        events(std::move(events)),
        decoder(tokenizer),
        stop(this->params.stop) {}

  const GenerateParams params;
  // What admission counted for it, in the total and in its caller's share.
  int64_t work_tokens = 0;
  const absl::Time deadline;
  const absl::Time arrived;
  const std::shared_ptr<GenerateEvents> events;

  std::mutex mu;
  bool cancelled = false;     // guarded by mu
  bool finished = false;      // guarded by mu
  uint64_t scheduler_id = 0;  // guarded by mu; 0 until submitted
  bool stopped = false;       // guarded by mu; a stop string was found
  absl::Status ended_by;      // guarded by mu; EndAll's status, if it cancelled the call

  // Written by Prepare before Submit, then by the scheduler thread only.
  uint64_t lease_id = PrefixStore::kNoLease;
  PrefixStore::PoolPages pool_pages;  // the lease's, when prefill said
  int64_t stored_tokens = 0;          // what prefill said the lease pins
  StreamingDecoder decoder;
  StopMatcher stop;
  absl::Time first_token_at;
  absl::Time submitted_at;     // handed to the scheduler
  absl::Time second_token_at;  // the second output token streamed
  GenerateSummary summary;
  // Prefill's first token went to the caller as soon as the Prefill call
  // returned: the scheduler's emission of it is not streamed again.
  bool first_token_streamed = false;
  // The Prefill call under way (StartPrefill), until RunPrefill has waited
  // for it (guarded by mu: Cancel cancels it); when it started; the first
  // token it sent (-1: none yet); whether Start started it (counted in
  // early_prefills_).
  std::shared_ptr<PendingPrefill> prefill;
  absl::Time prefill_started;
  int prefill_first_token = -1;
  bool started_early = false;
};

namespace {

double MsBetween(absl::Time a, absl::Time b) { return absl::ToDoubleMilliseconds(b - a); }

absl::Status ValidateStopStrings(const std::vector<std::string>& stop) {
  if (stop.size() > kMaxStopStrings) {
    return absl::InvalidArgumentError(
        absl::StrCat(stop.size(), " stop strings; at most ", kMaxStopStrings));
  }
  for (const std::string& s : stop) {
    if (s.empty() || s.size() > kMaxStopBytes) {
      return absl::InvalidArgumentError(absl::StrCat(
          "a stop string of ", s.size(), " bytes; each must have 1 to ", kMaxStopBytes));
    }
  }
  return absl::OkStatus();
}

int64_t TokensInFlightOrDefault(const DecodeStageOptions& options,
                                const BatchScheduler& scheduler) {
  return options.max_tokens_in_flight > 0 ? options.max_tokens_in_flight
                                          : 4 * scheduler.max_batch() * scheduler.capacity();
}

CallerSharesOptions DecodeSharesOptions(const DecodeStageOptions& options, int64_t total) {
  CallerSharesOptions shares;
  shares.bound_per_caller = options.max_tokens_in_flight_per_caller > 0
                                ? options.max_tokens_in_flight_per_caller
                                : std::max<int64_t>(total / 2, 1);
  shares.what = "tokens of work in flight (prompts + max_tokens)";
  shares.owner = "decode";
  shares.flag = "--max_tokens_in_flight_per_caller";
  return shares;
}

}  // namespace

absl::Status SchedulerLiveness(const BatchScheduler& scheduler, absl::Duration max_stall,
                               absl::Time now) {
  const absl::Duration busy = scheduler.busy_for(now);
  if (busy < max_stall) return absl::OkStatus();
  return absl::UnavailableError(absl::StrCat("the decode scheduler loop has been on one turn for ",
                                             absl::FormatDuration(busy), " (limit ",
                                             absl::FormatDuration(max_stall), "): wedged"));
}

DecodeStage::DecodeStage(const Gpt2Tokenizer* tokenizer, BatchScheduler* scheduler,
                         Prefiller* prefill, PrefixStore* store, WorkerPool* workers,
                         const DecodeStageOptions& options, MetricsRegistry* metrics)
    : tokenizer_(tokenizer),
      scheduler_(scheduler),
      prefill_(prefill),
      store_(store),
      workers_(workers),
      options_(options),
      max_tokens_in_flight_(TokensInFlightOrDefault(options, *scheduler)),
      shares_(DecodeSharesOptions(options, max_tokens_in_flight_)),
      calls_(metrics, "nanoserve_decode_requests_total", "Generate calls by outcome.") {
  if (metrics != nullptr) {
    metrics->AddGauge("nanoserve_decode_tokens_in_flight",
                      "Tokens of work admitted (prompts + max_tokens of the calls in flight).",
                      [this] { return static_cast<double>(tokens_in_flight_.load()); });
    metrics->AddGauge("nanoserve_decode_callers_in_flight",
                      "Callers (TLS identities or client addresses) with work in flight.",
                      [this] { return static_cast<double>(shares_.callers()); });
    metrics->AddGauge("nanoserve_decode_caller_tokens_in_flight_max",
                      "Tokens of work in flight of the caller that holds the most.",
                      [this] { return static_cast<double>(shares_.largest()); });
    metrics->AddObservedCounter(
        "nanoserve_decode_caller_share_refusals_total",
        "Calls refused because their caller held its share (--max_tokens_in_flight_per_caller).",
        [this] { return static_cast<double>(shares_.refused()); });
    metrics_.output_tokens =
        metrics->AddCounter("nanoserve_decode_output_tokens_total", "Tokens streamed.");
    metrics_.prompt_tokens = metrics->AddCounter("nanoserve_decode_prompt_tokens_total",
                                                 "Prompt tokens of finished calls.");
    metrics_.cached_tokens = metrics->AddCounter("nanoserve_decode_cached_prompt_tokens_total",
                                                 "Prompt tokens prefill reused from the KV store.");
    metrics_.fetched_bytes = metrics->AddCounter("nanoserve_decode_kv_fetched_bytes_total",
                                                 "K/V page bytes pulled from the store.");
    metrics_.fallbacks = metrics->AddCounter(
        "nanoserve_decode_fallbacks_total",
        "Calls whose prompt decode computed itself because prefill or the store failed.");
    metrics_.fetches_skipped = metrics->AddCounter(
        "nanoserve_decode_kv_fetch_skipped_total",
        "Prompts whose pages decode gathered from the page ids prefill returned, with no Fetch.");
    metrics_.ttft_ms = metrics->AddHistogram("nanoserve_decode_ttft_ms", "Time to first token.",
                                             LatencyBucketsMs());
    metrics_.tpot_ms =
        metrics->AddHistogram("nanoserve_decode_time_per_output_token_ms",
                              "Time per output token after the first.", LatencyBucketsMs());
    metrics_.fetch_ms =
        metrics->AddHistogram("nanoserve_decode_kv_fetch_ms",
                              "Pulling a prompt's pages from the store.", LatencyBucketsMs());
    metrics->AddGauge("nanoserve_decode_active_sequences", "Sequences in the running batch.",
                      [scheduler] { return static_cast<double>(scheduler->active()); });
    metrics->AddGauge("nanoserve_decode_queued_requests", "Requests waiting for a slot.",
                      [scheduler] { return static_cast<double>(scheduler->queued()); });
    metrics->AddObservedCounter("nanoserve_decode_steps_total", "Batched decode steps run.",
                                [scheduler] { return static_cast<double>(scheduler->steps()); });
  }
  if (store_ != nullptr) {
    renewer_ = std::thread([this] {
      while (!stop_.WaitForNotificationWithTimeout(options_.lease_renew_period)) RenewLeases();
    });
  }
}

DecodeStage::~DecodeStage() {
  stop_.Notify();
  if (renewer_.joinable()) renewer_.join();
}

std::shared_ptr<DecodeStage::Call> DecodeStage::Start(GenerateParams params, absl::Time deadline,
                                                      std::shared_ptr<GenerateEvents> events) {
  TraceFirstToken("decode_arrived");
  auto call = std::make_shared<Call>(std::move(params), deadline, std::move(events), *tokenizer_);
  absl::Status ending;
  {
    std::lock_guard<std::mutex> lock(live_mu_);
    ending = ending_;
    live_.emplace(call.get(), call);
  }
  const int64_t before = calls_in_flight_.fetch_add(1);
  absl::Status refused = ending.ok() ? Admit(*call, before) : ending;
  if (!refused.ok()) {
    EndEarly(call, refused);
    return call;
  }
  // With a prefill service and fewer early starts than workers, the prompt
  // is tokenized and its Prefill call started here: the request travels
  // while a worker takes the call, and the first token streams from the
  // call's callback, one thread hand-off fewer before it. Otherwise the
  // worker does both.
  if (prefill_ != nullptr && early_prefills_.fetch_add(1) < workers_->threads()) {
    auto batch = std::make_shared<BatchRequest>();
    if (!Tokenize(call, *batch)) {
      early_prefills_.fetch_sub(1);
      return call;
    }
    call->started_early = true;
    StartPrefill(call, *batch);
    workers_->Schedule([this, call, batch] { Prepare(call, batch.get()); });
    return call;
  }
  if (prefill_ != nullptr) early_prefills_.fetch_sub(1);
  workers_->Schedule([this, call] { Prepare(call, nullptr); });
  return call;
}

absl::Status DecodeStage::Admit(Call& call, int64_t calls_before) {
  const int64_t limit = scheduler_->max_batch() + scheduler_->max_queue();
  if (calls_before >= limit) {
    return absl::ResourceExhaustedError(
        absl::StrCat("decode is full: ", limit, " calls in flight (max_batch + max_queue)"));
  }
  // Tokens of work: the prompt (ids, or bytes of text) and the output, each
  // at most the context (longer ones are refused by validation anyway).
  const int64_t context = scheduler_->capacity();
  const GenerateParams& p = call.params;
  const int64_t prompt =
      static_cast<int64_t>(p.prompt_ids.empty() ? p.prompt.size() : p.prompt_ids.size());
  const int64_t work =
      std::min(prompt, context) + std::clamp<int64_t>(p.max_new_tokens, 0, context);
  // The caller's share first: a caller past it is told so, not that decode is full.
  if (absl::Status over = shares_.Take(p.caller, work); !over.ok()) return over;
  call.work_tokens = work;  // from here EndAdmission gives it back
  if (tokens_in_flight_.fetch_add(work) + work > max_tokens_in_flight_) {
    return absl::ResourceExhaustedError(
        absl::StrCat("decode is full: ", max_tokens_in_flight_,
                     " tokens of work in flight (prompts + max_tokens); try again later"));
  }
  return absl::OkStatus();
}

void DecodeStage::EndAdmission(Call& call) {
  calls_in_flight_.fetch_sub(1);
  if (call.work_tokens == 0) return;
  tokens_in_flight_.fetch_sub(call.work_tokens);
  shares_.Give(call.params.caller, call.work_tokens);
  call.work_tokens = 0;
}

std::shared_ptr<DecodeStage::Call> DecodeStage::Refuse(const absl::Status& status,
                                                       std::shared_ptr<GenerateEvents> events) {
  auto call = std::make_shared<Call>(GenerateParams(), absl::Now(), std::move(events), *tokenizer_);
  {
    std::lock_guard<std::mutex> lock(call->mu);
    call->finished = true;
  }
  calls_.Count(status);
  call->events->OnFinish(status, GenerateSummary());
  return call;
}

void DecodeStage::Cancel(const std::shared_ptr<Call>& call) {
  std::shared_ptr<PendingPrefill> prefill;
  {
    std::lock_guard<std::mutex> lock(call->mu);
    if (call->finished || call->cancelled) return;
    call->cancelled = true;
    prefill = call->prefill;
    if (call->scheduler_id != 0) scheduler_->Cancel(call->scheduler_id);
  }
  // Outside the lock: gRPC may run the call's callbacks on this thread.
  if (prefill != nullptr) prefill->Cancel();
}

void DecodeStage::EndAll(const absl::Status& status) {
  std::vector<std::shared_ptr<Call>> calls;
  {
    std::lock_guard<std::mutex> lock(live_mu_);
    ending_ = status;
    for (const auto& entry : live_) {
      if (std::shared_ptr<Call> call = entry.second.lock()) calls.push_back(std::move(call));
    }
  }
  for (const std::shared_ptr<Call>& call : calls) {
    std::shared_ptr<PendingPrefill> prefill;
    {
      std::lock_guard<std::mutex> lock(call->mu);
      if (call->finished || call->cancelled) continue;
      call->cancelled = true;
      call->ended_by = status;
      prefill = call->prefill;
      if (call->scheduler_id != 0) scheduler_->Cancel(call->scheduler_id);
    }
    if (prefill != nullptr) prefill->Cancel();
  }
}

absl::Status DecodeStage::CancelledStatus(Call& call) {
  std::lock_guard<std::mutex> lock(call.mu);
  return call.ended_by.ok() ? absl::CancelledError("cancelled") : call.ended_by;
}

void DecodeStage::Forget(Call& call) {
  std::lock_guard<std::mutex> lock(live_mu_);
  live_.erase(&call);
}

void DecodeStage::EndEarly(const std::shared_ptr<Call>& call, const absl::Status& status) {
  {
    std::lock_guard<std::mutex> lock(call->mu);
    call->finished = true;
  }
  Forget(*call);
  ReleaseLease(call->lease_id);
  call->lease_id = PrefixStore::kNoLease;
  EndAdmission(*call);
  calls_.Count(status);
  call->events->OnFinish(status, GenerateSummary());
}

bool DecodeStage::Tokenize(const std::shared_ptr<Call>& call, BatchRequest& batch) {
  const GenerateParams& params = call->params;
  absl::Status bad = ValidateCacheSalt(params.cache_salt);
  if (bad.ok()) bad = ValidateStopStrings(params.stop);
  // A text too long for any slot is refused before it is tokenized.
  const int64_t max_bytes = scheduler_->capacity() * tokenizer_->max_token_bytes();
  if (bad.ok() && params.prompt_ids.empty() &&
      static_cast<int64_t>(params.prompt.size()) > max_bytes) {
    bad = absl::InvalidArgumentError(
        absl::StrCat("prompt of ", params.prompt.size(), " bytes is more than the ",
                     scheduler_->capacity(), "-token context can hold"));
  }
  if (bad.ok()) {
    batch.prompt =
        params.prompt_ids.empty() ? tokenizer_->Encode(params.prompt) : params.prompt_ids;
    batch.max_new_tokens = params.max_new_tokens;
    batch.sampling = params.sampling;
    batch.stop_at_end_of_text = params.stop_at_end_of_text;
    batch.caller = params.caller;
    bad = scheduler_->Validate(batch);
  }
  if (!bad.ok()) {
    EndEarly(call, bad);
    return false;
  }
  call->summary.prompt_tokens = static_cast<int64_t>(batch.prompt.size());
  return true;
}

void DecodeStage::Prepare(const std::shared_ptr<Call>& call, BatchRequest* tokenized) {
  auto cancelled = [&] {
    std::lock_guard<std::mutex> lock(call->mu);
    return call->cancelled;
  };
  // 1. Validate and tokenize (done by Start where it started the Prefill
  // call).
  BatchRequest batch;
  if (tokenized != nullptr) {
    batch = std::move(*tokenized);
  } else {
    if (cancelled()) return EndEarly(call, CancelledStatus(*call));
    if (!Tokenize(call, batch)) return;
    StartPrefill(call, batch);
  }

  // 2, 3. Prefill chose the first token: it streams as soon as prefill has
  // it (before prefill stores the pages), then the pages are read while the
  // scheduler computes the prompt's last partial page.
  if (!RunPrefill(call, batch)) return;
  if (cancelled()) return EndEarly(call, CancelledStatus(*call));
  if (batch.first_token >= 0 && !call->first_token_streamed) {
    // (A stop string in it ends the call once the scheduler has it.)
    OnToken(*call, batch.first_token);
    call->first_token_streamed = true;
  }
  ReadPages(*call, batch);
  if (!call->summary.fallback_reason.empty() && metrics_.fallbacks != nullptr) {
    metrics_.fallbacks->Increment();
  }
  // 4.
  Submit(call, std::move(batch));
}

void DecodeStage::StartPrefill(const std::shared_ptr<Call>& call, const BatchRequest& batch) {
  if (prefill_ == nullptr) return;
  call->prefill_started = absl::Now();
  // The first token streams as soon as prefill chose it (on the call's
  // callback thread); the scheduler then continues from it, even if the
  // rest of the call fails and decode computes the prompt itself. The call
  // outlives the prefill: its Prepare, queued or running, waits for it.
  Call* raw = call.get();
  auto on_first = [this, raw](absl::Span<const int> first) {
    TraceFirstToken("decode_first_token_in");
    if (first.size() != 1 || first[0] < 0 || raw->first_token_streamed) return;
    raw->summary.prefill_first_token_ms = MsBetween(raw->prefill_started, absl::Now());
    raw->prefill_first_token = first[0];
    OnToken(*raw, first[0]);
    raw->first_token_streamed = true;
    TraceFirstToken("decode_first_token_out");
  };
  TraceFirstToken("decode_prefill_started");
  std::shared_ptr<PendingPrefill> pending =
      prefill_->Start({PrefillPrompt{batch.prompt, batch.sampling, call->params.cache_salt}},
                      call->deadline, std::move(on_first));
  bool cancelled = false;
  {
    std::lock_guard<std::mutex> lock(call->mu);
    call->prefill = pending;
    cancelled = call->cancelled;
  }
  if (cancelled) pending->Cancel();  // outside the lock, as in Cancel
}

bool DecodeStage::RunPrefill(const std::shared_ptr<Call>& call, BatchRequest& batch) {
  std::shared_ptr<PendingPrefill> pending;
  {
    std::lock_guard<std::mutex> lock(call->mu);
    pending = call->prefill;
  }
  if (pending == nullptr) return true;
  GenerateSummary& summary = call->summary;
  absl::StatusOr<PrefillOutcome> outcome = pending->Wait();
  {
    std::lock_guard<std::mutex> lock(call->mu);
    call->prefill.reset();
  }
  if (call->started_early) early_prefills_.fetch_sub(1);
  summary.prefill_ms = MsBetween(call->prefill_started, absl::Now());
  if (call->prefill_first_token >= 0) batch.first_token = call->prefill_first_token;
  if (outcome.ok()) {
    const PrefilledPrompt& p = outcome->prompts[0];
    if (!call->first_token_streamed) batch.first_token = p.first_token;
    call->lease_id = p.lease_id;
    call->pool_pages = p.pool_pages;
    call->stored_tokens = p.stored_tokens;
    summary.prefill_server_ms = outcome->total_ms;
    summary.prefill_store_ms = outcome->store_ms;
    summary.prefill_compute_ms = outcome->compute_ms;
    summary.cached_prompt_tokens = p.cached_tokens;
    if (!outcome->store_status.ok()) {
      summary.fallback_reason =
          absl::StrCat("prefill could not use the kv store: ", outcome->store_status.message());
    }
  } else if (outcome.status().code() == absl::StatusCode::kInvalidArgument) {
    EndEarly(call, outcome.status());
    return false;
  } else if (absl::Now() >= call->deadline) {
    EndEarly(call, absl::DeadlineExceededError(
                       absl::StrCat("deadline passed in prefill: ", outcome.status().message())));
    return false;
  } else {
    summary.fallback_reason = absl::StrCat("prefill failed: ", outcome.status().ToString());
  }
  return true;
}

void DecodeStage::ReadPages(Call& call, BatchRequest& batch) {
  if (call.lease_id == PrefixStore::kNoLease || store_ == nullptr) return;
  GenerateSummary& summary = call.summary;
  const absl::Time t = absl::Now();
  // With the pool mapped and the pages prefill named: no call to the store,
  // and the scheduler copies them at admission straight into the slot's
  // pages (the lease pins them until the call ends). Else Fetch: over
  // bytes, a copy after the stream; from a mapped pool, one gather.
  if (!call.pool_pages.empty()) {
    absl::StatusOr<torch::Tensor> pool = store_->PoolOf(call.pool_pages);
    const int64_t tokens =
        pool.ok() ? static_cast<int64_t>(call.pool_pages.pages.size()) * pool->size(4) : 0;
    // Ids that do not cover what the lease pins are not trusted: Fetch.
    if (pool.ok() && tokens == call.stored_tokens &&
        tokens <= static_cast<int64_t>(batch.prompt.size())) {
      batch.prompt_pool = *std::move(pool);
      batch.prompt_pool_pages = call.pool_pages.pages;
      summary.kv_fetch_skipped = true;
      summary.fetched_prompt_tokens = tokens;
      summary.kv_bytes_fetched =
          static_cast<int64_t>(call.pool_pages.pages.size()) * batch.prompt_pool[0].nbytes();
      summary.fetch_ms = MsBetween(t, absl::Now());  // the copy's time is added at the end
      if (metrics_.fetches_skipped != nullptr) metrics_.fetches_skipped->Increment();
      return;
    }
  }
  absl::StatusOr<torch::Tensor> pages = store_->ReadLeased(call.lease_id, scheduler_->device());
  summary.fetch_ms = MsBetween(t, absl::Now());
  const int64_t tokens = pages.ok() ? PageRun::StagedTokens(*pages) : 0;
  if (pages.ok() && tokens <= static_cast<int64_t>(batch.prompt.size())) {
    batch.prompt_pages = *std::move(pages);
    summary.fetched_prompt_tokens = tokens;
    summary.kv_bytes_fetched = static_cast<int64_t>(batch.prompt_pages.nbytes());
    return;
  }
  summary.fallback_reason =
      pages.ok() ? "kv store returned more tokens than the prompt"
                 : absl::StrCat("kv store fetch failed: ", pages.status().ToString());
  ReleaseLease(call.lease_id);
  call.lease_id = PrefixStore::kNoLease;
}

void DecodeStage::Submit(const std::shared_ptr<Call>& call, BatchRequest batch) {
  Call* raw = call.get();
  batch.on_token = [this, raw](int token) {
    if (raw->first_token_streamed) {
      raw->first_token_streamed = false;
      return;
    }
    OnToken(*raw, token);
  };
  batch.on_done = [this, call](const absl::Status& status, const BatchResult& result) {
    OnDone(call, status, result);
  };
  if (call->lease_id != PrefixStore::kNoLease) {
    std::lock_guard<std::mutex> lock(leases_mu_);
    leases_.insert(call->lease_id);
  }
  absl::Status refused;
  {
    std::lock_guard<std::mutex> lock(call->mu);
    refused = call->ended_by.ok() ? absl::CancelledError("cancelled") : call->ended_by;
    if (!call->cancelled) {
      call->submitted_at = absl::Now();
      absl::StatusOr<uint64_t> id = scheduler_->Submit(std::move(batch));
      if (id.ok()) {
        call->scheduler_id = *id;
        // Stopped at the first token, streamed before it was submitted.
        if (call->stopped) scheduler_->Cancel(*id);
        return;
      }
      refused = id.status();
    }
  }
  EndEarly(call, refused);
}

void DecodeStage::OnToken(Call& call, int token) {
  if (call.stop.stopped()) return;  // the step that made it ran before the cancel
  const absl::Time now = absl::Now();
  if (call.summary.output_tokens == 0) call.first_token_at = now;
  if (call.summary.output_tokens == 1) call.second_token_at = now;
  StreamedToken t;
  t.id = token;
  absl::StatusOr<std::string> text = call.decoder.Push(token);
  t.text = call.stop.Push(text.ok() ? *text : "");
  t.index = call.summary.output_tokens++;
  call.events->OnToken(t);
  if (call.stop.stopped()) StopAtString(call);
}

void DecodeStage::StopAtString(Call& call) {
  std::lock_guard<std::mutex> lock(call.mu);
  call.stopped = true;
  if (call.scheduler_id != 0) scheduler_->Cancel(call.scheduler_id);
}

void DecodeStage::OnDone(const std::shared_ptr<Call>& call, const absl::Status& given,
                         const BatchResult& result) {
  absl::Status status = given;
  bool stopped = false;
  absl::Status ended_by;
  {
    std::lock_guard<std::mutex> lock(call->mu);
    call->finished = true;
    stopped = call->stopped;
    ended_by = call->ended_by;
  }
  Forget(*call);
  // Cancelled at a stop string: a call that ended as asked. Cancelled by
  // EndAll: its status.
  if (status.code() == absl::StatusCode::kCancelled) {
    if (stopped) {
      status = absl::OkStatus();
    } else if (!ended_by.ok()) {
      status = ended_by;
    }
  }
  EndAdmission(*call);
  if (call->lease_id != PrefixStore::kNoLease) {
    {
      std::lock_guard<std::mutex> lock(leases_mu_);
      leases_.erase(call->lease_id);
    }
    // Off the scheduler thread: a Release may be a network call.
    const uint64_t lease = call->lease_id;
    workers_->Schedule([this, lease] { ReleaseLease(lease); });
    call->lease_id = PrefixStore::kNoLease;
  }
  calls_.Count(status);
  if (!status.ok()) {
    call->events->OnFinish(status, GenerateSummary());
    return;
  }
  const absl::Time now = absl::Now();
  GenerateSummary& s = call->summary;
  const int64_t produced = s.output_tokens;  // those streamed
  s.finish_reason = stopped ? "stop" : result.finish_reason;
  s.trailing_text = call->stop.Push(call->decoder.Flush());
  s.trailing_text += call->stop.Flush();
  s.recomputed_prompt_tokens = result.computed_prompt_tokens;
  s.queue_ms = result.queue_ms;
  s.fetch_ms += result.prompt_pages_ms;  // the pages' copy into the slot
  if (metrics_.fetch_ms != nullptr && s.kv_bytes_fetched > 0) {
    metrics_.fetch_ms->Observe(s.fetch_ms);
    metrics_.fetched_bytes->Increment(static_cast<double>(s.kv_bytes_fetched));
  }
  s.ttft_ms = MsBetween(call->arrived, call->first_token_at);
  s.submitted_ms = MsBetween(call->arrived, call->submitted_at);
  if (produced > 1) s.second_token_ms = MsBetween(call->arrived, call->second_token_at);
  s.total_ms = MsBetween(call->arrived, now);
  s.ms_per_output_token =
      produced > 1 ? MsBetween(call->first_token_at, now) / static_cast<double>(produced - 1) : 0;
  if (metrics_.output_tokens != nullptr) {
    metrics_.output_tokens->Increment(static_cast<double>(produced));
    metrics_.prompt_tokens->Increment(static_cast<double>(s.prompt_tokens));
    metrics_.cached_tokens->Increment(static_cast<double>(s.cached_prompt_tokens));
    metrics_.ttft_ms->Observe(s.ttft_ms);
    if (produced > 1) metrics_.tpot_ms->Observe(s.ms_per_output_token);
  }
  call->events->OnFinish(absl::OkStatus(), s);
}

void DecodeStage::ReleaseLease(uint64_t lease_id) {
  if (lease_id == PrefixStore::kNoLease || store_ == nullptr) return;
  {
    std::lock_guard<std::mutex> lock(leases_mu_);
    leases_.erase(lease_id);
  }
  store_->Release(lease_id).IgnoreError();  // an expired lease is released already
}

void DecodeStage::RenewLeases() {
  std::vector<uint64_t> ids;
  {
    std::lock_guard<std::mutex> lock(leases_mu_);
    ids.assign(leases_.begin(), leases_.end());
  }
  if (!ids.empty()) store_->Renew(ids).IgnoreError();
}

}  // namespace nanoserve
