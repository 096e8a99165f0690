// The model identity services compare before they trust each other's K/V or
// first tokens: each side's model fingerprint (engine/model_fingerprint.h,
// computed where the model is named) travels in the KV layout
// (nanoserve.v1.KvLayout.model_fingerprint) and in the Prefill request, and
// the side that receives one checks it here. K/V computed with other
// weights of the same shape fit every page and give wrong tokens silently;
// with this check they are refused with a clear error and the caller
// computes the prompt itself.
//
// Thread safety: stateless.
#ifndef NANOSERVE_BASE_MODEL_IDENTITY_H_
#define NANOSERVE_BASE_MODEL_IDENTITY_H_

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace nanoserve {

// OK if `theirs` and `ours` are the same fingerprint, or either is empty (a
// peer, or this side, that does not say: not checked). Else
// FAILED_PRECONDITION: "<what>: <peer> runs the model '<theirs>', this
// service '<ours>': start the KV store, prefill and decode with the same
// --model and --seed".
absl::Status CheckSameModel(absl::string_view what, absl::string_view peer,
                            absl::string_view theirs, absl::string_view ours);

}  // namespace nanoserve

#endif  // NANOSERVE_BASE_MODEL_IDENTITY_H_
