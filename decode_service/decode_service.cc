#include "decode_service/decode_service.h"

#include <memory>
#include <optional>
#include <utility>

#include "absl/time/clock.h"
#include "base/stream_sink.h"

namespace nanoserve {
namespace {

// The sink the handler writes into (base/stream_sink.h).
class ReactorSink final : public GenerateSink, public StreamSink<v1::GenerateResponse> {
 public:
  void Send(v1::GenerateResponse message) override { StreamSink::Send(std::move(message)); }
  void Finish(const grpc::Status& status, v1::GenerateResponse last) override {
    StreamSink::Finish(status, status.ok() ? std::make_optional(std::move(last)) : std::nullopt);
  }
};

class GenerateReactor final : public grpc::ServerWriteReactor<v1::GenerateResponse> {
 public:
  GenerateReactor(DecodeHandler* handler, grpc::CallbackServerContext* context,
                  const v1::GenerateRequest& request)
      : handler_(handler), sink_(std::make_shared<ReactorSink>()) {
    sink_->Attach(this);
    call_ = handler_->Start(request, absl::FromChrono(context->deadline()), sink_);
  }
  void OnWriteDone(bool ok) override { sink_->OnWriteDone(ok); }
  void OnCancel() override { handler_->Cancel(call_); }
  void OnDone() override {
    sink_->Detach();
    handler_->Cancel(call_);  // no-op if it finished
    delete this;
  }

 private:
  DecodeHandler* handler_;
  std::shared_ptr<ReactorSink> sink_;
  std::shared_ptr<DecodeHandler::Call> call_;
};

}  // namespace

grpc::ServerWriteReactor<v1::GenerateResponse>* DecodeService::Generate(
    grpc::CallbackServerContext* context, const v1::GenerateRequest* request) {
  return new GenerateReactor(handler_, context, *request);
}

}  // namespace nanoserve
