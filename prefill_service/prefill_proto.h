// The prefill stage's types (prefill_stage.h) <-> nanoserve.v1 Prefill
// messages, for the service's handler and for its client.
#ifndef NANOSERVE_PREFILL_SERVICE_PREFILL_PROTO_H_
#define NANOSERVE_PREFILL_SERVICE_PREFILL_PROTO_H_

#include <vector>

#include "absl/types/span.h"
#include "nanoserve/v1/prefill.pb.h"
#include "prefill_service/prefill_stage.h"

namespace nanoserve {

v1::PrefillRequest PrefillRequestToProto(absl::Span<const PrefillPrompt> prompts);
std::vector<PrefillPrompt> PrefillPromptsFromProto(const v1::PrefillRequest& request);

void PrefillOutcomeToProto(const PrefillOutcome& outcome, v1::PrefillResponse* response);
// store_status comes back as UNKNOWN with store_error as its message.
PrefillOutcome PrefillOutcomeFromProto(const v1::PrefillResponse& response);

}  // namespace nanoserve

#endif  // NANOSERVE_PREFILL_SERVICE_PREFILL_PROTO_H_
