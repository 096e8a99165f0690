#include "decode_service/decode_service.h"

#include <memory>
#include <optional>
#include <utility>

#include <grpcpp/support/proto_buffer_writer.h>

#include "absl/time/clock.h"
#include "base/stream_sink.h"
#include "base/tls.h"

namespace nanoserve {
namespace {

// A GenerateResponse in its wire form, as the raw method writes it.
grpc::ByteBuffer Serialized(const v1::GenerateResponse& message) {
  grpc::ByteBuffer buffer;
  bool own_buffer = false;
  // Fails only for a message over 2 GiB; a token or a summary never is.
  grpc::SerializationTraits<v1::GenerateResponse>::Serialize(message, &buffer, &own_buffer).ok();
  return buffer;
}

// The sink the handler writes into (base/stream_sink.h).
class ReactorSink final : public GenerateSink, public StreamSink<grpc::ByteBuffer> {
 public:
  void Send(v1::GenerateResponse message) override { StreamSink::Send(Serialized(message)); }
  void Finish(const grpc::Status& status, v1::GenerateResponse last) override {
    StreamSink::Finish(status, status.ok() ? std::make_optional(Serialized(last)) : std::nullopt);
  }
};

class GenerateReactor final : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
 public:
  GenerateReactor(DecodeHandler* handler, grpc::CallbackServerContext* context,
                  const grpc::ByteBuffer& request)
      : handler_(handler), sink_(std::make_shared<ReactorSink>()) {
    sink_->Attach(this);
    call_ = handler_->Start(request, PeerIdentityOf(*context),
                            absl::FromChrono(context->deadline()), sink_);
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

grpc::ServerWriteReactor<grpc::ByteBuffer>* DecodeService::Generate(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request) {
  return new GenerateReactor(handler_, context, *request);
}

}  // namespace nanoserve
