#include "prefill_service/prefill_client.h"

#include <algorithm>
#include <cstdio>
#include <memory>
#include <utility>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "base/status.h"
#include "prefill_service/prefill_proto.h"

namespace nanoserve {

namespace {

// One PrefillStream call on gRPC's callback API: the first tokens go to
// on_first from gRPC's thread as they arrive; the response waits for Wait.
// Its owner (PendingStream) always waits for OnDone before it lets it go,
// so that it, its ClientContext and the context's hold on the channel end
// on the owner's thread, never on one of gRPC's (where the last reference
// to a channel must not be dropped, and which may run past the owner's
// teardown).
class StreamCall final : public grpc::ClientReadReactor<v1::PrefillEvent> {
 public:
  StreamCall(FirstTokens on_first, int prompts)
      : on_first_(std::move(on_first)), prompts_(prompts) {}

  grpc::ClientContext context;
  v1::PrefillRequest request;

  void Begin(v1::Prefill::StubInterface* stub) {
    stub->async()->PrefillStream(&context, &request, this);
    StartRead(&event_);
    StartCall();
  }
  void OnReadDone(bool ok) override {
    if (!ok) return;  // the stream ended: OnDone follows
    if (event_.has_first_tokens() && !first_seen_ && !answered_) {
      first_seen_ = true;
      const std::vector<int> first(event_.first_tokens().tokens().begin(),
                                   event_.first_tokens().tokens().end());
      if (static_cast<int>(first.size()) == prompts_ && on_first_) on_first_(first);
    } else if (event_.has_response() && !answered_) {
      response_ = std::move(*event_.mutable_response());
      answered_ = true;
    }
    StartRead(&event_);
  }
  // The last touch of this object on gRPC's thread: the owner may destroy
  // it as soon as the lock is released.
  void OnDone(const grpc::Status& status) override {
    absl::MutexLock lock(&mu_);
    status_ = status.ok() && !answered_
                  ? grpc::Status(grpc::StatusCode::INTERNAL,
                                 "prefill: the stream ended without a response")
                  : status;
    done_ = true;
  }
  // Blocks until the call is over: its status, and its response if OK.
  grpc::Status Wait(v1::PrefillResponse* response) {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(&done_));
    if (status_.ok()) *response = std::move(response_);
    return status_;
  }

 private:
  const FirstTokens on_first_;
  const int prompts_;
  v1::PrefillEvent event_;
  // gRPC's thread only until done_, then Wait's.
  bool first_seen_ = false;
  bool answered_ = false;
  v1::PrefillResponse response_;
  absl::Mutex mu_;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status status_ ABSL_GUARDED_BY(mu_);
};

// PrefillClient::Start's handle.
class PendingStream final : public PendingPrefill {
 public:
  PendingStream(PrefillClient* client, std::shared_ptr<StreamCall> call, size_t prompts,
                absl::Status refused)
      : client_(client), call_(std::move(call)), prompts_(prompts), refused_(std::move(refused)) {}
  ~PendingStream() override {
    if (waited_ || call_ == nullptr) return;
    absl::StatusOr<PrefillOutcome> unread = Wait();
    if (unread.ok()) client_->Abandon(*unread);
  }
  void Cancel() override {
    if (call_ != nullptr) call_->context.TryCancel();
  }
  absl::StatusOr<PrefillOutcome> Wait() override {
    waited_ = true;
    if (!refused_.ok()) return refused_;
    v1::PrefillResponse response;
    const grpc::Status status = call_->Wait(&response);
    return client_->Finish(status, response, prompts_);
  }

 private:
  PrefillClient* client_;
  const std::shared_ptr<StreamCall> call_;
  const size_t prompts_;
  const absl::Status refused_;
  bool waited_ = false;
};

}  // namespace

std::unique_ptr<PendingPrefill> PrefillClient::Start(std::vector<PrefillPrompt> prompts,
                                                     absl::Time deadline, FirstTokens on_first) {
  if (absl::Status refused = breaker_.Allow(); !refused.ok()) {
    return std::make_unique<PendingStream>(this, nullptr, prompts.size(), refused);
  }
  auto call = std::make_shared<StreamCall>(std::move(on_first), static_cast<int>(prompts.size()));
  call->context.set_deadline(absl::ToChronoTime(std::min(deadline, absl::Now() + timeout_)));
  call->request = PrefillRequestToProto(prompts);
  call->request.set_model_fingerprint(model_fingerprint_);
  call->Begin(stub_);
  return std::make_unique<PendingStream>(this, std::move(call), prompts.size(), absl::OkStatus());
}

absl::StatusOr<PrefillOutcome> PrefillClient::Prefill(absl::Span<const PrefillPrompt> prompts,
                                                      absl::Time deadline,
                                                      const FirstTokens& on_first) {
  if (on_first) {
    return Start(std::vector<PrefillPrompt>(prompts.begin(), prompts.end()), deadline, on_first)
        ->Wait();
  }
  if (absl::Status refused = breaker_.Allow(); !refused.ok()) return refused;
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(std::min(deadline, absl::Now() + timeout_)));
  v1::PrefillResponse response;
  v1::PrefillRequest request = PrefillRequestToProto(prompts);
  request.set_model_fingerprint(model_fingerprint_);
  const grpc::Status status = stub_->Prefill(&context, request, &response);
  return Finish(status, response, prompts.size());
}

absl::StatusOr<PrefillOutcome> PrefillClient::Finish(const grpc::Status& status,
                                                     const v1::PrefillResponse& response,
                                                     size_t prompts) {
  // A call its caller cancelled says nothing of prefill's health.
  if (status.error_code() != grpc::StatusCode::CANCELLED) {
    breaker_.Record(FromGrpcStatus(status, "prefill"));
  }
  if (status.error_code() == grpc::StatusCode::FAILED_PRECONDITION &&
      !refusal_logged_.exchange(true)) {
    std::fprintf(stderr, "prefill refuses this service's calls (%s); prompts are computed here\n",
                 status.error_message().c_str());
  }
  if (!status.ok()) return FromGrpcStatus(status, "prefill");
  if (response.prompts_size() != static_cast<int>(prompts)) {
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
