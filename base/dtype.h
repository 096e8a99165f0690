// The names of the floating-point types the model and the KV pages come in
// ("fp32", "bf16", "fp16"), as flags, CSV rows and the KV store's wire
// layout spell them. Below the engine so that the KV store's wire format
// needs no engine.
#ifndef NANOSERVE_BASE_DTYPE_H_
#define NANOSERVE_BASE_DTYPE_H_

#include <string>

#include <c10/core/ScalarType.h>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace nanoserve {

// "fp32", "bf16" or "fp16" (or "float32", "bfloat16", "float16");
// INVALID_ARGUMENT otherwise.
absl::StatusOr<c10::ScalarType> ParseDtype(absl::string_view name);
// The short name ParseDtype takes ("bf16"); LibTorch's own name for others.
std::string DtypeName(c10::ScalarType dtype);

}  // namespace nanoserve

#endif  // NANOSERVE_BASE_DTYPE_H_
