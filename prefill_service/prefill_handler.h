// nanoserve.v1.Prefill in proto terms: turns a PrefillRequest into a
// PrefillStage call (prefill_stage.h holds the logic) and its outcome into a
// PrefillResponse, its status into a gRPC code. A request naming another
// model than this service's is refused (FAILED_PRECONDITION,
// base/model_identity.h) before anything runs: its first tokens and pages
// would be another model's.
//
// Thread safety: thread-safe (the stage is).
#ifndef NANOSERVE_PREFILL_SERVICE_PREFILL_HANDLER_H_
#define NANOSERVE_PREFILL_SERVICE_PREFILL_HANDLER_H_

#include <string>
#include <utility>

#include <grpcpp/support/status.h>

#include "absl/time/time.h"
#include "base/tls.h"
#include "nanoserve/v1/prefill.pb.h"
#include "prefill_service/prefill_stage.h"

namespace nanoserve {

class PrefillHandler {
 public:
  // `stage` is not owned. `model_fingerprint`: this service's model
  // (engine/model_fingerprint.h); empty: callers' models are not checked.
  explicit PrefillHandler(PrefillStage* stage, std::string model_fingerprint = "")
      : stage_(stage), model_fingerprint_(std::move(model_fingerprint)) {}

  // The stage's errors as gRPC codes (see Prefiller::Prefill). The leases
  // of the response are taken for `caller` (its certificate name), who may
  // then use them at the store.
  // `on_first` as Prefiller::Prefill's (called on the stage's batcher
  // thread).
  grpc::Status Prefill(const v1::PrefillRequest& request, absl::Time deadline,
                       const PeerIdentity& caller, v1::PrefillResponse* response,
                       const FirstTokens& on_first = nullptr);

  // Releases the leases of a response its caller will not read (the call was
  // cancelled), so its pages do not stay pinned until the leases expire.
  void Abandon(const v1::PrefillResponse& response);

 private:
  PrefillStage* stage_;
  const std::string model_fingerprint_;
};

}  // namespace nanoserve

#endif  // NANOSERVE_PREFILL_SERVICE_PREFILL_HANDLER_H_
