#include "prefill_service/prefill_service.h"

#include <memory>
#include <optional>
#include <utility>

#include "absl/time/clock.h"
#include "base/first_token_trace.h"
#include "base/stream_sink.h"

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

namespace {

// One PrefillStream call: the sink takes the worker's messages, the reactor
// is gRPC's side of the call.
class PrefillStreamReactor final : public grpc::ServerWriteReactor<v1::PrefillEvent> {
 public:
  PrefillStreamReactor() : sink_(std::make_shared<StreamSink<v1::PrefillEvent>>()) {
    sink_->Attach(this);
  }
  std::shared_ptr<StreamSink<v1::PrefillEvent>> sink() const { return sink_; }
  void OnWriteDone(bool ok) override { sink_->OnWriteDone(ok); }
  void OnCancel() override { sink_->OnCancel(); }
  void OnDone() override {
    sink_->Detach();
    delete this;
  }

 private:
  std::shared_ptr<StreamSink<v1::PrefillEvent>> sink_;
};

}  // namespace

grpc::ServerWriteReactor<v1::PrefillEvent>* PrefillService::PrefillStream(
    grpc::CallbackServerContext* context, const v1::PrefillRequest* request) {
  TraceFirstToken("prefill_arrived");
  auto* reactor = new PrefillStreamReactor();
  std::shared_ptr<StreamSink<v1::PrefillEvent>> sink = reactor->sink();
  const absl::Time deadline = absl::FromChrono(context->deadline());
  PeerIdentity caller = PeerIdentityOf(*context);
  // The worker keeps its own copy of the request: a broken stream may end
  // the call (and free `request` and `context`) while the worker runs.
  workers_->Schedule([this, request = *request, sink, deadline, caller = std::move(caller)] {
    TraceFirstToken("prefill_worker");
    auto on_first = [&sink](absl::Span<const int> first) {
      v1::PrefillEvent event;
      event.mutable_first_tokens()->mutable_tokens()->Add(first.begin(), first.end());
      sink->Send(std::move(event));
      TraceFirstToken("prefill_first_token_sent");
    };
    v1::PrefillEvent last;
    grpc::Status status =
        handler_->Prefill(request, deadline, caller, last.mutable_response(), on_first);
    // Nobody will read the leases: the caller went away.
    if (status.ok() && sink->cancelled()) handler_->Abandon(last.response());
    sink->Finish(status, status.ok() ? std::make_optional(std::move(last)) : std::nullopt);
  });
  return reactor;
}

}  // namespace nanoserve
