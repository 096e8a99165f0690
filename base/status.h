// The one place where absl::Status and grpc::Status meet. Canonical codes
// share their numbers, so the mapping is exact both ways.
#ifndef NANOSERVE_BASE_STATUS_H_
#define NANOSERVE_BASE_STATUS_H_

#include <grpcpp/support/status.h>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace nanoserve {

grpc::Status ToGrpcStatus(const absl::Status& status);
// `context`, if not empty, prefixes the message ("kv store Match: ...").
absl::Status FromGrpcStatus(const grpc::Status& status, absl::string_view context = "");

}  // namespace nanoserve

#endif  // NANOSERVE_BASE_STATUS_H_
