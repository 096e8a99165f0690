#include "prefill_service/prefill_proto.h"

#include <utility>

#include "rpc/sampling_proto.h"

namespace nanoserve {

v1::PrefillRequest PrefillRequestToProto(absl::Span<const PrefillPrompt> prompts) {
  v1::PrefillRequest request;
  for (const PrefillPrompt& p : prompts) {
    v1::PrefillPrompt* out = request.add_prompts();
    out->mutable_tokens()->Add(p.tokens.begin(), p.tokens.end());
    *out->mutable_sampling() = SamplingToProto(p.sampling);
    out->set_cache_salt(p.cache_salt);
  }
  return request;
}

std::vector<PrefillPrompt> PrefillPromptsFromProto(const v1::PrefillRequest& request) {
  std::vector<PrefillPrompt> prompts;
  prompts.reserve(request.prompts_size());
  for (const v1::PrefillPrompt& p : request.prompts()) {
    prompts.push_back({std::vector<int>(p.tokens().begin(), p.tokens().end()),
                       SamplingFromProto(p.sampling()), p.cache_salt()});
  }
  return prompts;
}

void PrefillOutcomeToProto(const PrefillOutcome& outcome, v1::PrefillResponse* response) {
  for (const PrefilledPrompt& p : outcome.prompts) {
    v1::PrefilledPrompt* out = response->add_prompts();
    out->set_first_token(p.first_token);
    out->set_lease_id(p.lease_id);
    out->set_stored_tokens(p.stored_tokens);
    out->set_cached_tokens(p.cached_tokens);
    if (!p.pool_pages.empty()) {
      out->mutable_shared()->set_epoch(p.pool_pages.epoch);
      out->mutable_shared()->mutable_pages()->Add(p.pool_pages.pages.begin(),
                                                  p.pool_pages.pages.end());
    }
  }
  response->set_computed_tokens(outcome.computed_tokens);
  response->set_store_used(outcome.store_status.ok());
  response->set_store_error(outcome.store_status.ok() ? "" : outcome.store_status.ToString());
  response->set_store_ms(outcome.store_ms);
  response->set_compute_ms(outcome.compute_ms);
  response->set_total_ms(outcome.total_ms);
}

PrefillOutcome PrefillOutcomeFromProto(const v1::PrefillResponse& response) {
  PrefillOutcome outcome;
  for (const v1::PrefilledPrompt& p : response.prompts()) {
    PrefilledPrompt prompt{p.first_token(), p.lease_id(), p.stored_tokens(), p.cached_tokens()};
    if (p.has_shared()) {
      prompt.pool_pages.epoch = p.shared().epoch();
      prompt.pool_pages.pages.assign(p.shared().pages().begin(), p.shared().pages().end());
    }
    outcome.prompts.push_back(std::move(prompt));
  }
  outcome.computed_tokens = response.computed_tokens();
  if (!response.store_used()) outcome.store_status = absl::UnknownError(response.store_error());
  outcome.store_ms = response.store_ms();
  outcome.compute_ms = response.compute_ms();
  outcome.total_ms = response.total_ms();
  return outcome;
}

}  // namespace nanoserve
