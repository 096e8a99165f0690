// nanoserve.v1.Decode's Generate in proto terms: turns a GenerateRequest
// (or its bytes, as they came) into a DecodeStage call (decode_stage.h holds
// the logic) and the call's tokens and summary into GenerateResponse
// messages, its status into a gRPC code. Bytes that are not a
// GenerateRequest end the call with INVALID_ARGUMENT saying so, counted
// among the calls' outcomes like any other.
//
// Thread safety: thread-safe (the stage is).
#ifndef NANOSERVE_DECODE_SERVICE_DECODE_HANDLER_H_
#define NANOSERVE_DECODE_SERVICE_DECODE_HANDLER_H_

#include <memory>

#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/status.h>

#include "absl/time/time.h"
#include "base/tls.h"
#include "decode_service/decode_stage.h"
#include "nanoserve/v1/decode.pb.h"

namespace nanoserve {

// Where one call's messages go: the gRPC reactor, or a test.
class GenerateSink {
 public:
  virtual ~GenerateSink() = default;
  // A Token message; called in order, never after Finish.
  virtual void Send(v1::GenerateResponse message) = 0;
  // The end: `last` (the Finished message) is sent only if status is OK.
  virtual void Finish(const grpc::Status& status, v1::GenerateResponse last) = 0;
};

class DecodeHandler {
 public:
  using Call = DecodeStage::Call;

  // `stage` is not owned.
  explicit DecodeHandler(DecodeStage* stage) : stage_(stage) {}

  // Starts a call of `caller` (its share of admission is CallerKeyOf's);
  // the sink gets its messages. The returned handle cancels it.
  std::shared_ptr<Call> Start(const v1::GenerateRequest& request, const PeerIdentity& caller,
                              absl::Time deadline, std::shared_ptr<GenerateSink> sink);
  // The same from the request's serialized bytes; bytes that do not parse
  // end it at once with INVALID_ARGUMENT.
  std::shared_ptr<Call> Start(const grpc::ByteBuffer& request, const PeerIdentity& caller,
                              absl::Time deadline, std::shared_ptr<GenerateSink> sink);
  // Ends the call (CANCELLED) wherever it is; idempotent.
  void Cancel(const std::shared_ptr<Call>& call) { stage_->Cancel(call); }

 private:
  DecodeStage* stage_;
};

}  // namespace nanoserve

#endif  // NANOSERVE_DECODE_SERVICE_DECODE_HANDLER_H_
