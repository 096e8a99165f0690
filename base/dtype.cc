#include "base/dtype.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace nanoserve {

absl::StatusOr<c10::ScalarType> ParseDtype(absl::string_view name) {
  if (name == "fp32" || name == "float32") return c10::kFloat;
  if (name == "bf16" || name == "bfloat16") return c10::kBFloat16;
  if (name == "fp16" || name == "float16") return c10::kHalf;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown dtype '", name, "' (fp32, bf16 or fp16)"));
}

std::string DtypeName(c10::ScalarType dtype) {
  switch (dtype) {
    case c10::kFloat:
      return "fp32";
    case c10::kBFloat16:
      return "bf16";
    case c10::kHalf:
      return "fp16";
    default:
      return std::string(c10::toString(dtype));
  }
}

}  // namespace nanoserve
