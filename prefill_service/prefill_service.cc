#include "prefill_service/prefill_service.h"

#include <utility>

#include "absl/time/clock.h"

namespace nanoserve {

grpc::ServerUnaryReactor* PrefillService::Prefill(grpc::CallbackServerContext* context,
                                                  const v1::PrefillRequest* request,
                                                  v1::PrefillResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  const absl::Time deadline = absl::FromChrono(context->deadline());
  PeerIdentity caller = PeerIdentityOf(*context);
  workers_->Schedule(
      [this, context, reactor, request, response, deadline, caller = std::move(caller)] {
        grpc::Status status = handler_->Prefill(*request, deadline, caller, response);
        if (status.ok() && context->IsCancelled()) handler_->Abandon(*response);
        reactor->Finish(status);
      });
  return reactor;
}

}  // namespace nanoserve
