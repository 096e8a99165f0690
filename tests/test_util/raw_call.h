// A unary gRPC call of raw bytes, for requests no generated stub would send
// (an unparseable message): the call's status once it ends.
#ifndef NANOSERVE_TESTS_TEST_UTIL_RAW_CALL_H_
#define NANOSERVE_TESTS_TEST_UTIL_RAW_CALL_H_

#include <chrono>
#include <memory>
#include <string>
#include <utility>

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include "absl/synchronization/notification.h"
#include "absl/time/time.h"

namespace nanoserve::testing {

// Sends `bytes` as the request of `method` ("/package.Service/Method") with a
// 10 s deadline; DEADLINE_EXCEEDED if no status came within 15 s.
inline grpc::Status RawUnaryCall(const std::shared_ptr<grpc::Channel>& channel,
                                 const std::string& method, const std::string& bytes) {
  grpc::GenericStub raw(channel);
  grpc::Slice slice(bytes);
  grpc::ByteBuffer request(&slice, 1);
  grpc::ByteBuffer response;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  grpc::Status status;
  absl::Notification done;
  raw.UnaryCall(&context, method, grpc::StubOptions(), &request, &response, [&](grpc::Status s) {
    status = std::move(s);
    done.Notify();
  });
  if (!done.WaitForNotificationWithTimeout(absl::Seconds(15))) {
    context.TryCancel();
    done.WaitForNotification();
    return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "no status within 15 s");
  }
  return status;
}

}  // namespace nanoserve::testing

#endif  // NANOSERVE_TESTS_TEST_UTIL_RAW_CALL_H_
