#include "prefill_service/prefill_handler.h"

#include <vector>

#include "base/model_identity.h"
#include "base/status.h"
#include "prefill_service/prefill_proto.h"

namespace nanoserve {

grpc::Status PrefillHandler::Prefill(const v1::PrefillRequest& request, absl::Time deadline,
                                     const PeerIdentity& caller, v1::PrefillResponse* response,
                                     const FirstTokens& on_first) {
  if (absl::Status other = CheckSameModel("Prefill refused", "the caller",
                                          request.model_fingerprint(), model_fingerprint_);
      !other.ok()) {
    return ToGrpcStatus(other);
  }
  const std::vector<PrefillPrompt> prompts = PrefillPromptsFromProto(request);
  absl::StatusOr<PrefillOutcome> outcome =
      stage_->Prefill(prompts, deadline, caller.name, on_first);
  if (!outcome.ok()) return ToGrpcStatus(outcome.status());
  PrefillOutcomeToProto(*outcome, response);
  return grpc::Status::OK;
}

void PrefillHandler::Abandon(const v1::PrefillResponse& response) {
  stage_->Abandon(PrefillOutcomeFromProto(response));
}

}  // namespace nanoserve
