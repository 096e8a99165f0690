// nanoserve.v1.Decode on gRPC's callback API: Generate is a write reactor
// fed by DecodeHandler through a GenerateSink. Messages are queued and
// written one at a time; a client that goes away cancels its call.
//
// Generate is registered raw (its request and responses as bytes): with the
// typed callback method, gRPC parses the request before any code of ours
// runs and answers bytes that do not parse with UNIMPLEMENTED and no message
// (grpc 1.51's CallbackServerStreamingHandler). Raw, the handler parses
// them and answers INVALID_ARGUMENT saying what was wrong; the wire format
// and reflection are unchanged.
#ifndef NANOSERVE_DECODE_SERVICE_DECODE_SERVICE_H_
#define NANOSERVE_DECODE_SERVICE_DECODE_SERVICE_H_

#include <grpcpp/support/byte_buffer.h>

#include "decode_service/decode_handler.h"
#include "nanoserve/v1/decode.grpc.pb.h"

namespace nanoserve {

class DecodeService final : public v1::Decode::WithRawCallbackMethod_Generate<v1::Decode::Service> {
 public:
  explicit DecodeService(DecodeHandler* handler) : handler_(handler) {}

  grpc::ServerWriteReactor<grpc::ByteBuffer>* Generate(grpc::CallbackServerContext* context,
                                                       const grpc::ByteBuffer* request) override;

 private:
  DecodeHandler* handler_;
};

}  // namespace nanoserve

#endif  // NANOSERVE_DECODE_SERVICE_DECODE_SERVICE_H_
