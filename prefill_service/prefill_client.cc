#include "prefill_service/prefill_client.h"

#include <algorithm>

#include "base/status.h"
#include "prefill_service/prefill_proto.h"

namespace nanoserve {

absl::StatusOr<PrefillOutcome> PrefillClient::Prefill(absl::Span<const PrefillPrompt> prompts,
                                                      absl::Time deadline) {
  if (absl::Status refused = breaker_.Allow(); !refused.ok()) return refused;
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(std::min(deadline, absl::Now() + timeout_)));
  v1::PrefillResponse response;
  grpc::Status status = stub_->Prefill(&context, PrefillRequestToProto(prompts), &response);
  breaker_.Record(FromGrpcStatus(status, "prefill"));
  if (!status.ok()) return FromGrpcStatus(status, "prefill");
  if (response.prompts_size() != static_cast<int>(prompts.size())) {
    PrefillOutcome outcome = PrefillOutcomeFromProto(response);
    Abandon(outcome);
    return absl::InternalError("prefill: the response does not answer every prompt");
  }
  return PrefillOutcomeFromProto(response);
}

void PrefillClient::Abandon(const PrefillOutcome& outcome) {
  if (store_ == nullptr) return;
  for (const PrefilledPrompt& p : outcome.prompts) store_->Release(p.lease_id).IgnoreError();
}

}  // namespace nanoserve
