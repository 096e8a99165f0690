#include "base/model_identity.h"

#include "absl/strings/str_cat.h"

namespace nanoserve {

absl::Status CheckSameModel(absl::string_view what, absl::string_view peer,
                            absl::string_view theirs, absl::string_view ours) {
  if (theirs.empty() || ours.empty() || theirs == ours) return absl::OkStatus();
  return absl::FailedPreconditionError(
      absl::StrCat(what, ": ", peer, " runs the model '", theirs, "', this service '", ours,
                   "': start the KV store, prefill and decode with the same --model and --seed"));
}

}  // namespace nanoserve
