#include "decode_service/decode_handler.h"

#include <chrono>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "rpc/sampling_proto.h"
#include "rpc/status.h"

namespace nanoserve {

class DecodeHandler::Call {
 public:
  Call(const v1::GenerateRequest& request, absl::Time deadline,
       std::shared_ptr<GenerateSink> sink, const Gpt2Tokenizer& tokenizer)
      : request(request), deadline(deadline), arrived(absl::Now()), sink(std::move(sink)),
        decoder(tokenizer) {}

  const v1::GenerateRequest request;
  const absl::Time deadline;
  const absl::Time arrived;
  const std::shared_ptr<GenerateSink> sink;

  std::mutex mu;
  bool cancelled = false;   // guarded by mu
  bool finished = false;    // guarded by mu
  uint64_t scheduler_id = 0;  // guarded by mu; 0 until submitted

  // Written by Prepare before Submit, then by the scheduler thread only.
  uint64_t lease_id = 0;
  StreamingDecoder decoder;
  int64_t next_index = 0;
  absl::Time first_token_at;
  v1::Usage usage;
  v1::Timings timings;
  std::string fallback_reason;
};

namespace {

double MsBetween(absl::Time a, absl::Time b) { return absl::ToDoubleMilliseconds(b - a); }

}  // namespace

DecodeHandler::DecodeHandler(const Gpt2Tokenizer* tokenizer, BatchScheduler* scheduler,
                             v1::Prefill::StubInterface* prefill, KvStoreClient* store,
                             WorkerPool* workers, const DecodeHandlerOptions& options,
                             MetricsRegistry* metrics)
    : tokenizer_(tokenizer),
      scheduler_(scheduler),
      prefill_(prefill),
      store_(store),
      workers_(workers),
      options_(options) {
  if (metrics != nullptr) {
    const std::string calls = "Generate calls by outcome.";
    metrics_.ok = metrics->AddCounter("nanoserve_decode_requests_total", calls, "code=\"OK\"");
    metrics_.failed = metrics->AddCounter("nanoserve_decode_requests_total", calls, "code=\"error\"");
    metrics_.cancelled =
        metrics->AddCounter("nanoserve_decode_requests_total", calls, "code=\"CANCELLED\"");
    metrics_.output_tokens =
        metrics->AddCounter("nanoserve_decode_output_tokens_total", "Tokens streamed.");
    metrics_.prompt_tokens =
        metrics->AddCounter("nanoserve_decode_prompt_tokens_total", "Prompt tokens of finished calls.");
    metrics_.cached_tokens = metrics->AddCounter(
        "nanoserve_decode_cached_prompt_tokens_total", "Prompt tokens prefill reused from the KV store.");
    metrics_.fetched_bytes = metrics->AddCounter("nanoserve_decode_kv_fetched_bytes_total",
                                                 "K/V page bytes pulled from the store.");
    metrics_.fallbacks = metrics->AddCounter(
        "nanoserve_decode_fallbacks_total",
        "Calls whose prompt decode computed itself because prefill or the store failed.");
    metrics_.ttft_ms = metrics->AddHistogram("nanoserve_decode_ttft_ms",
                                             "Time to first token.", LatencyBucketsMs());
    metrics_.tpot_ms = metrics->AddHistogram("nanoserve_decode_time_per_output_token_ms",
                                             "Time per output token after the first.",
                                             LatencyBucketsMs());
    metrics_.fetch_ms = metrics->AddHistogram("nanoserve_decode_kv_fetch_ms",
                                              "Pulling a prompt's pages from the store.",
                                              LatencyBucketsMs());
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

DecodeHandler::~DecodeHandler() {
  stop_.Notify();
  if (renewer_.joinable()) renewer_.join();
}

std::shared_ptr<DecodeHandler::Call> DecodeHandler::Start(const v1::GenerateRequest& request,
                                                          absl::Time deadline,
                                                          std::shared_ptr<GenerateSink> sink) {
  auto call = std::make_shared<Call>(request, deadline, std::move(sink), *tokenizer_);
  workers_->Schedule([this, call] { Prepare(call); });
  return call;
}

void DecodeHandler::Cancel(const std::shared_ptr<Call>& call) {
  std::lock_guard<std::mutex> lock(call->mu);
  if (call->finished || call->cancelled) return;
  call->cancelled = true;
  if (call->scheduler_id != 0) scheduler_->Cancel(call->scheduler_id);
}

void DecodeHandler::EndEarly(const std::shared_ptr<Call>& call, const grpc::Status& status) {
  {
    std::lock_guard<std::mutex> lock(call->mu);
    call->finished = true;
  }
  ReleaseLease(call->lease_id);
  call->lease_id = 0;
  if (metrics_.ok != nullptr) {
    (status.error_code() == grpc::StatusCode::CANCELLED ? metrics_.cancelled : metrics_.failed)
        ->Increment();
  }
  call->sink->Finish(status, v1::GenerateResponse());
}

void DecodeHandler::Prepare(const std::shared_ptr<Call>& call) {
  const v1::GenerateRequest& request = call->request;
  auto cancelled = [&] {
    std::lock_guard<std::mutex> lock(call->mu);
    return call->cancelled;
  };
  const grpc::Status kCancelled(grpc::StatusCode::CANCELLED, "cancelled");
  if (cancelled()) return EndEarly(call, kCancelled);

  // 1. Validate and tokenize.
  BatchRequest batch;
  if (request.prompt_ids_size() > 0) {
    batch.prompt.assign(request.prompt_ids().begin(), request.prompt_ids().end());
  } else {
    batch.prompt = tokenizer_->Encode(request.prompt());
  }
  batch.max_new_tokens = request.max_new_tokens();
  batch.sampling = SamplingFromProto(request.sampling());
  batch.stop_at_end_of_text = !request.ignore_eos();
  if (absl::Status bad = scheduler_->Validate(batch); !bad.ok()) {
    return EndEarly(call, ToGrpcStatus(bad));
  }
  const int64_t n = static_cast<int64_t>(batch.prompt.size());
  call->usage.set_prompt_tokens(n);

  // 2. Prefill.
  if (prefill_ != nullptr) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(
        std::min(call->deadline, absl::Now() + options_.prefill_timeout)));
    v1::PrefillRequest prefill_request;
    prefill_request.mutable_tokens()->Add(batch.prompt.begin(), batch.prompt.end());
    *prefill_request.mutable_sampling() = request.sampling();
    v1::PrefillResponse prefilled;
    const absl::Time t = absl::Now();
    grpc::Status status = prefill_->Prefill(&context, prefill_request, &prefilled);
    call->timings.set_prefill_ms(MsBetween(t, absl::Now()));
    if (status.ok()) {
      batch.first_token = prefilled.first_token();
      call->lease_id = prefilled.lease_id();
      call->usage.set_cached_prompt_tokens(prefilled.cached_tokens());
      if (!prefilled.store_used()) {
        call->fallback_reason =
            absl::StrCat("prefill could not use the kv store: ", prefilled.store_error());
      }
    } else if (status.error_code() == grpc::StatusCode::INVALID_ARGUMENT) {
      return EndEarly(call, status);
    } else if (absl::Now() >= call->deadline) {
      return EndEarly(call, grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                                         absl::StrCat("deadline passed in prefill: ",
                                                      status.error_message())));
    } else {
      call->fallback_reason = absl::StrCat("prefill failed (", status.error_code(),
                                           "): ", status.error_message());
    }
  }
  if (cancelled()) return EndEarly(call, kCancelled);

  // 3. Fetch the prompt's pages.
  if (call->lease_id != 0 && store_ != nullptr) {
    const absl::Time t = absl::Now();
    auto fetched = store_->Fetch(call->lease_id);
    call->timings.set_fetch_ms(MsBetween(t, absl::Now()));
    if (fetched.ok() && fetched->tokens <= n) {
      batch.prompt_kv = fetched->kv;
      call->usage.set_fetched_prompt_tokens(fetched->tokens);
      call->timings.set_kv_bytes_fetched(fetched->bytes);
      if (metrics_.fetch_ms != nullptr) {
        metrics_.fetch_ms->Observe(call->timings.fetch_ms());
        metrics_.fetched_bytes->Increment(static_cast<double>(fetched->bytes));
      }
    } else {
      call->fallback_reason = fetched.ok() ? "kv store returned more tokens than the prompt"
                                           : absl::StrCat("kv store fetch failed: ",
                                                          fetched.status().ToString());
      ReleaseLease(call->lease_id);
      call->lease_id = 0;
    }
  }
  if (!call->fallback_reason.empty() && metrics_.fallbacks != nullptr) metrics_.fallbacks->Increment();

  // 4. Join the batch.
  Call* raw = call.get();
  batch.on_token = [this, raw](int token) { OnToken(*raw, token); };
  batch.on_done = [this, call](const absl::Status& status, const BatchResult& result) {
    OnDone(call, status, result);
  };
  if (call->lease_id != 0) {
    std::lock_guard<std::mutex> lock(leases_mu_);
    leases_.insert(call->lease_id);
  }
  absl::Status refused;
  {
    std::lock_guard<std::mutex> lock(call->mu);
    if (!call->cancelled) {
      auto id = scheduler_->Submit(std::move(batch));
      if (id.ok()) {
        call->scheduler_id = *id;
        return;
      }
      refused = id.status();
    }
  }
  EndEarly(call, refused.ok() ? kCancelled : ToGrpcStatus(refused));
}

void DecodeHandler::OnToken(Call& call, int token) {
  const absl::Time now = absl::Now();
  if (call.next_index == 0) call.first_token_at = now;
  v1::GenerateResponse message;
  v1::Token* t = message.mutable_token();
  t->set_id(token);
  auto text = call.decoder.Push(token);
  if (text.ok()) t->set_text(*text);
  t->set_index(call.next_index++);
  call.sink->Send(std::move(message));
}

void DecodeHandler::OnDone(const std::shared_ptr<Call>& call, const absl::Status& status,
                           const BatchResult& result) {
  {
    std::lock_guard<std::mutex> lock(call->mu);
    call->finished = true;
  }
  if (call->lease_id != 0) {
    {
      std::lock_guard<std::mutex> lock(leases_mu_);
      leases_.erase(call->lease_id);
    }
    // Off the scheduler thread: a Release is a network call.
    const uint64_t lease = call->lease_id;
    workers_->Schedule([this, lease] { ReleaseLease(lease); });
    call->lease_id = 0;
  }
  if (!status.ok()) {
    if (metrics_.ok != nullptr) {
      (status.code() == absl::StatusCode::kCancelled ? metrics_.cancelled : metrics_.failed)
          ->Increment();
    }
    call->sink->Finish(ToGrpcStatus(status), v1::GenerateResponse());
    return;
  }
  const absl::Time now = absl::Now();
  const int64_t produced = static_cast<int64_t>(result.output_ids.size());
  v1::GenerateResponse message;
  v1::Finished* finished = message.mutable_finished();
  finished->set_finish_reason(result.finish_reason);
  finished->set_fallback_reason(call->fallback_reason);
  finished->set_trailing_text(call->decoder.Flush());
  call->usage.set_output_tokens(produced);
  call->usage.set_recomputed_prompt_tokens(result.computed_prompt_tokens);
  *finished->mutable_usage() = call->usage;
  v1::Timings& timings = call->timings;
  timings.set_queue_ms(result.queue_ms);
  timings.set_ttft_ms(MsBetween(call->arrived, call->first_token_at));
  timings.set_total_ms(MsBetween(call->arrived, now));
  timings.set_ms_per_output_token(
      produced > 1 ? MsBetween(call->first_token_at, now) / static_cast<double>(produced - 1) : 0);
  *finished->mutable_timings() = timings;
  if (metrics_.ok != nullptr) {
    metrics_.ok->Increment();
    metrics_.output_tokens->Increment(static_cast<double>(produced));
    metrics_.prompt_tokens->Increment(static_cast<double>(call->usage.prompt_tokens()));
    metrics_.cached_tokens->Increment(static_cast<double>(call->usage.cached_prompt_tokens()));
    metrics_.ttft_ms->Observe(timings.ttft_ms());
    if (produced > 1) metrics_.tpot_ms->Observe(timings.ms_per_output_token());
  }
  call->sink->Finish(grpc::Status::OK, std::move(message));
}

void DecodeHandler::ReleaseLease(uint64_t lease_id) {
  if (lease_id == 0 || store_ == nullptr) return;
  {
    std::lock_guard<std::mutex> lock(leases_mu_);
    leases_.erase(lease_id);
  }
  store_->Release(lease_id).IgnoreError();  // an expired lease is released already
}

void DecodeHandler::RenewLeases() {
  std::vector<uint64_t> ids;
  {
    std::lock_guard<std::mutex> lock(leases_mu_);
    ids.assign(leases_.begin(), leases_.end());
  }
  if (!ids.empty()) store_->Renew(ids).IgnoreError();
}

}  // namespace nanoserve
