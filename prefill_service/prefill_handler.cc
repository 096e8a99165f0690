#include "prefill_service/prefill_handler.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/prefill.h"
#include "engine/sampler.h"
#include "kv_store/client/kv_wire.h"
#include "rpc/sampling_proto.h"

namespace nanoserve {
namespace {

double MsSince(absl::Time start) { return absl::ToDoubleMilliseconds(absl::Now() - start); }

}  // namespace

PrefillHandler::PrefillHandler(const Gpt2Model* model, KvStoreClient* store,
                               const PrefillHandlerOptions& options, MetricsRegistry* metrics)
    : model_(model),
      store_(store),
      options_(options),
      layout_(MakeKvLayout(model->config(), model->options().dtype, /*page_size=*/0)),
      cache_(model->config(), 1, model->config().n_positions, model->options().dtype,
             model->options().device) {
  if (metrics == nullptr) return;
  requests_ok_ = metrics->AddCounter("nanoserve_prefill_requests_total", "Prefill calls by outcome.",
                                     "code=\"OK\"");
  requests_failed_ = metrics->AddCounter("nanoserve_prefill_requests_total",
                                         "Prefill calls by outcome.", "code=\"error\"");
  cached_tokens_ = metrics->AddCounter("nanoserve_prefill_cached_tokens_total",
                                       "Prompt tokens reused from the KV store.");
  computed_tokens_ = metrics->AddCounter("nanoserve_prefill_computed_tokens_total",
                                         "Prompt tokens run through the model.");
  store_fallbacks_ = metrics->AddCounter(
      "nanoserve_prefill_store_fallbacks_total",
      "Prompts computed in full because the KV store could not be used.");
  latency_ms_ = metrics->AddHistogram("nanoserve_prefill_latency_ms", "Prefill call latency.",
                                      LatencyBucketsMs());
}

grpc::Status PrefillHandler::Validate(const v1::PrefillRequest& request) const {
  const Gpt2Config& config = model_->config();
  auto invalid = [](const std::string& m) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, m);
  };
  if (request.tokens_size() == 0) return invalid("empty prompt");
  if (request.tokens_size() > config.n_positions) {
    return invalid(absl::StrCat("prompt of ", request.tokens_size(),
                                " tokens exceeds the context of ", config.n_positions));
  }
  for (int32_t t : request.tokens()) {
    if (t < 0 || t >= config.vocab_size) {
      return invalid(absl::StrCat("token id ", t, " outside the vocabulary [0, ", config.vocab_size, ")"));
    }
  }
  if (absl::Status bad = ValidateSamplingOptions(SamplingFromProto(request.sampling())); !bad.ok()) return invalid(std::string(bad.message()));
  return grpc::Status::OK;
}

grpc::Status PrefillHandler::Prefill(const v1::PrefillRequest& request, absl::Time deadline,
                                     v1::PrefillResponse* response) {
  const absl::Time start = absl::Now();
  grpc::Status status = Validate(request);
  if (status.ok()) {
    std::lock_guard<std::mutex> lock(mu_);
    if (absl::Now() >= deadline) {
      status = grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "deadline passed while queued");
    } else {
      const std::vector<int> prompt(request.tokens().begin(), request.tokens().end());
      try {
        Sampler sampler(SamplingFromProto(request.sampling()));
        Run(prompt, sampler, response);
        if (absl::Now() >= deadline) {  // nobody will read the lease: give it back
          Abandon(*response);
          status = grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "deadline passed in prefill");
        }
      } catch (const c10::Error& e) {
        status = grpc::Status(grpc::StatusCode::INTERNAL,
                              absl::StrCat("prefill: ", e.what_without_backtrace()));
      }
    }
  }
  response->set_total_ms(MsSince(start));
  if (latency_ms_ != nullptr) {
    (status.ok() ? requests_ok_ : requests_failed_)->Increment();
    if (status.ok()) {
      latency_ms_->Observe(response->total_ms());
      cached_tokens_->Increment(static_cast<double>(response->cached_tokens()));
      computed_tokens_->Increment(static_cast<double>(response->computed_tokens()));
      if (!response->store_used()) store_fallbacks_->Increment();
    }
  }
  return status;
}

void PrefillHandler::Abandon(const v1::PrefillResponse& response) {
  if (store_ != nullptr && response.lease_id() != 0) store_->Release(response.lease_id()).IgnoreError();
}

void PrefillHandler::Run(const std::vector<int>& prompt, Sampler& sampler,
                         v1::PrefillResponse* response) {
  const int64_t n = static_cast<int64_t>(prompt.size());
  const std::vector<int32_t> tokens(prompt.begin(), prompt.end());
  cache_.set_length(0, 0);

  // 1-2: the cached prefix, if the store can give it.
  absl::Time t = absl::Now();
  KvStoreClient::Match match;
  v1::KvLayout layout = layout_;
  std::string store_error = store_ == nullptr ? "no kv store configured" : "";
  if (store_ != nullptr) {
    auto matched = store_->MatchPrefix(absl::MakeConstSpan(tokens.data(), n - 1));
    if (!matched.ok()) {
      store_error = matched.status().ToString();
    } else {
      match = *matched;
      layout.set_page_size(match.layout.page_size());
      if (!SameKvLayout(layout, match.layout)) {
        store_error = absl::StrCat("store layout ", KvLayoutString(match.layout),
                                   " is not this model's ", KvLayoutString(layout));
      } else if (match.matched_tokens > 0) {
        auto fetched = store_->Fetch(match.lease_id);
        if (!fetched.ok()) {
          store_error = fetched.status().ToString();
        } else {
          cache_.LoadRow(0, fetched->kv);
        }
      }
      if (!store_error.empty()) {
        store_->Release(match.lease_id).IgnoreError();
        match = KvStoreClient::Match();
      }
    }
  }
  response->set_match_ms(absl::ToDoubleMilliseconds(absl::Now() - t));
  const int64_t cached = cache_.length(0);

  // The rest of the prompt, and the first token.
  t = absl::Now();
  torch::Tensor logits = PrefillRow(*model_, cache_, 0, prompt, options_.prefill_chunk);
  response->set_first_token(static_cast<int32_t>(sampler.Sample(logits)[0]));
  response->set_computed_tokens(n - cached);
  response->set_cached_tokens(cached);
  response->set_compute_ms(absl::ToDoubleMilliseconds(absl::Now() - t));

  // 3: the new whole pages into the store.
  t = absl::Now();
  if (store_error.empty()) {
    const int64_t page_size = layout.page_size();
    const int64_t full = n / page_size * page_size;
    if (full > cached) {
      auto put = store_->Put(absl::MakeConstSpan(tokens.data(), full), match.lease_id, cached,
                             cache_.ReadRow(0, cached, full), layout);
      store_->Release(match.lease_id).IgnoreError();
      if (put.ok()) {
        response->set_lease_id(put->lease_id());
        response->set_stored_tokens(full);
      } else {
        store_error = put.status().ToString();
      }
    } else {  // nothing new: the match lease pins the whole pages already
      response->set_lease_id(match.lease_id);
      response->set_stored_tokens(cached);
    }
  }
  response->set_put_ms(absl::ToDoubleMilliseconds(absl::Now() - t));
  response->set_store_used(store_error.empty());
  response->set_store_error(store_error);
}

}  // namespace nanoserve
