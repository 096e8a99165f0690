// nanoserve.v1.Decode on gRPC's callback API: Generate is a write reactor
// fed by DecodeHandler through a GenerateSink. Messages are queued and
// written one at a time; a client that goes away cancels its call.
#ifndef NANOSERVE_DECODE_SERVICE_DECODE_SERVICE_H_
#define NANOSERVE_DECODE_SERVICE_DECODE_SERVICE_H_

#include "decode_service/decode_handler.h"
#include "nanoserve/v1/decode.grpc.pb.h"

namespace nanoserve {

class DecodeService final : public v1::Decode::CallbackService {
 public:
  explicit DecodeService(DecodeHandler* handler) : handler_(handler) {}

  grpc::ServerWriteReactor<v1::GenerateResponse>* Generate(
      grpc::CallbackServerContext* context, const v1::GenerateRequest* request) override;

 private:
  DecodeHandler* handler_;
};

}  // namespace nanoserve

#endif  // NANOSERVE_DECODE_SERVICE_DECODE_SERVICE_H_
