// Resolves a --model spec to a loaded model: a checkpoint directory (HF
// config.json + model.safetensors), a .safetensors file, or
// "random:<preset>" for seeded random weights of a preset's real size.
#ifndef NANOSERVE_ENGINE_MODEL_LOADER_H_
#define NANOSERVE_ENGINE_MODEL_LOADER_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/checkpoint.h"
#include "engine/model.h"

namespace nanoserve {

struct LoadedModel {
  std::unique_ptr<Gpt2Model> model;
  bool random_weights = false;
  std::string description;  // e.g. "random:gpt2 (124M parameters, seed 0)"
};

// The model used when none is named: $NANOSERVE_MODEL if set, else an HF
// checkpoint found at ./models/gpt2, else "random:gpt2".
std::string DefaultModelSpec();

// A --model spec's weights on the host, before any model is built from them
// (one checkpoint can make several models, e.g. one per attention kind).
struct ResolvedCheckpoint {
  Checkpoint checkpoint;
  bool random_weights = false;
  std::string description;  // as LoadedModel::description
};

// Reads or (for "random:<preset>") makes the checkpoint that `spec` names.
// Errors: INVALID_ARGUMENT for an unknown preset; those of LoadCheckpoint;
// RESOURCE_EXHAUSTED if the host cannot hold random weights.
absl::StatusOr<ResolvedCheckpoint> ResolveCheckpoint(const std::string& spec, uint64_t seed = 0);

// The shape of the model `spec` names, without loading weights: a preset's
// for "random:<preset>", else the config.json of the checkpoint directory
// (or of the directory holding a .safetensors file).
absl::StatusOr<Gpt2Config> LoadModelConfig(const std::string& spec);

// Model options from their command-line names: device "cpu"|"cuda", dtype
// "fp32"|"bf16"|"fp16", attention "naive"|"fused". INVALID_ARGUMENT naming
// the value that is not one of them.
absl::StatusOr<ModelOptions> ParseModelOptions(absl::string_view device, absl::string_view dtype,
                                               absl::string_view attention);

// Loads `spec` onto options.device in options.dtype. Random weights are
// drawn from `seed`. Errors name the spec and the problem.
absl::StatusOr<LoadedModel> LoadModel(const std::string& spec, const ModelOptions& options,
                                      uint64_t seed = 0);

}  // namespace nanoserve

#endif  // NANOSERVE_ENGINE_MODEL_LOADER_H_
