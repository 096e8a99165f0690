#include "prefill_service/prefill_client.h"

#include <algorithm>
#include <cstdio>
#include <memory>
#include <utility>
#include <vector>

#include "base/status.h"
#include "prefill_service/prefill_proto.h"

namespace nanoserve {

grpc::Status PrefillClient::Stream(grpc::ClientContext& context, const v1::PrefillRequest& request,
                                   const FirstTokens& on_first, v1::PrefillResponse& response) {
  std::unique_ptr<grpc::ClientReaderInterface<v1::PrefillEvent>> reader =
      stub_->PrefillStream(&context, request);
  v1::PrefillEvent event;
  bool answered = false;
  std::vector<int> first;
  while (reader->Read(&event)) {
    if (event.has_first_tokens() && first.empty() && !answered) {
      first.assign(event.first_tokens().tokens().begin(), event.first_tokens().tokens().end());
      if (static_cast<int>(first.size()) == request.prompts_size()) on_first(first);
    } else if (event.has_response() && !answered) {
      response = std::move(*event.mutable_response());
      answered = true;
    }
  }
  grpc::Status status = reader->Finish();
  if (status.ok() && !answered) {
    return grpc::Status(grpc::StatusCode::INTERNAL, "prefill: the stream ended without a response");
  }
  return status;
}

absl::StatusOr<PrefillOutcome> PrefillClient::Prefill(absl::Span<const PrefillPrompt> prompts,
                                                      absl::Time deadline,
                                                      const FirstTokens& on_first) {
  if (absl::Status refused = breaker_.Allow(); !refused.ok()) return refused;
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(std::min(deadline, absl::Now() + timeout_)));
  v1::PrefillResponse response;
  v1::PrefillRequest request = PrefillRequestToProto(prompts);
  request.set_model_fingerprint(model_fingerprint_);
  grpc::Status status = on_first ? Stream(context, request, on_first, response)
                                 : stub_->Prefill(&context, request, &response);
  breaker_.Record(FromGrpcStatus(status, "prefill"));
  if (status.error_code() == grpc::StatusCode::FAILED_PRECONDITION &&
      !refusal_logged_.exchange(true)) {
    std::fprintf(stderr, "prefill refuses this service's calls (%s); prompts are computed here\n",
                 status.error_message().c_str());
  }
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
