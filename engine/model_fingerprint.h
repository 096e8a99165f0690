// A short name of a model's weights, cheap to compute without loading them:
// K/V computed with one model are valid for another process only if both
// have the same fingerprint (the KV store stamps its snapshots with it,
// kv_cache/snapshot.h).
//
//   random:<preset> with seed S   "random:<preset> seed S" (the weights are
//                                 a function of the two, for one LibTorch)
//   a checkpoint                  "weights:<16 hex digits> <bytes> bytes": a
//                                 64-bit FNV-1a hash of config.json, the
//                                 weight file's size, its first MiB (the
//                                 safetensors header and the first tensors)
//                                 and 64 samples of 64 KiB spread evenly
//                                 over the rest; about 5 MiB read, whatever
//                                 the model's size.
// The path of a checkpoint is not part of it: the same files mounted
// elsewhere have the same fingerprint. A fine-tune of the same shape changes
// its sampled bytes; two checkpoints that differ only between the samples
// would collide (not a case that arises from training).
//
// Thread safety: stateless.
#ifndef NANOSERVE_ENGINE_MODEL_FINGERPRINT_H_
#define NANOSERVE_ENGINE_MODEL_FINGERPRINT_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace nanoserve {

// The fingerprint of the model a --model `spec` names (model_loader.h) with
// random weights drawn from `seed`. NOT_FOUND or INTERNAL (naming the
// file) when the checkpoint's files cannot be read; INVALID_ARGUMENT for an
// unknown preset.
absl::StatusOr<std::string> ModelFingerprint(const std::string& spec, uint64_t seed);

}  // namespace nanoserve

#endif  // NANOSERVE_ENGINE_MODEL_FINGERPRINT_H_
