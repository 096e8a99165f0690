#include "engine/model_loader.h"

#include <sys/stat.h>
#include <cstdlib>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/dtype.h"
#include "base/torch_status.h"
#include "engine/device.h"

namespace nanoserve {

std::string DefaultModelSpec() {
  if (const char* env = std::getenv("NANOSERVE_MODEL"); env != nullptr && *env != '\0') {
    return env;
  }
  // stat, not std::filesystem: the pip LibTorch exports clashing copies.
  struct stat st;
  if (stat("models/gpt2/model.safetensors", &st) == 0) return "models/gpt2";
  return "random:gpt2";
}

absl::StatusOr<ModelOptions> ParseModelOptions(absl::string_view device, absl::string_view dtype,
                                               absl::string_view attention) {
  ModelOptions options;
  auto parsed_device = ParseDevice(device);
  if (!parsed_device.ok()) return parsed_device.status();
  auto parsed_dtype = ParseDtype(dtype);
  if (!parsed_dtype.ok()) return parsed_dtype.status();
  auto parsed_attention = ParseAttentionKind(attention);
  if (!parsed_attention.ok()) return parsed_attention.status();
  options.device = *parsed_device;
  options.dtype = *parsed_dtype;
  options.attention = *parsed_attention;
  return options;
}

absl::StatusOr<Gpt2Config> LoadModelConfig(const std::string& spec) {
  if (absl::StartsWith(spec, "random:")) return Gpt2Preset(spec.substr(7));
  std::string dir = spec;
  if (absl::EndsWith(spec, ".safetensors")) {
    const size_t slash = spec.rfind('/');
    dir = slash == std::string::npos ? "." : spec.substr(0, slash);
  }
  return LoadGpt2Config(dir + "/config.json");
}

absl::StatusOr<ResolvedCheckpoint> ResolveCheckpoint(const std::string& spec, uint64_t seed) {
  ResolvedCheckpoint resolved;
  if (absl::StartsWith(spec, "random:")) {
    auto config = Gpt2Preset(spec.substr(7));
    if (!config.ok()) return config.status();
    // Weights of the largest presets take gigabytes of host memory.
    absl::StatusOr<Checkpoint> random =
        TorchResult("making random weights", [&] { return RandomCheckpoint(*config, seed); });
    if (!random.ok()) return random.status();
    resolved.checkpoint = *std::move(random);
    resolved.random_weights = true;
    resolved.description = absl::StrFormat("%s (%.0fM parameters, random weights, seed %d)", spec,
                                           config->num_parameters() / 1e6, seed);
  } else {
    auto read = LoadCheckpoint(spec);
    if (!read.ok()) return read.status();
    resolved.checkpoint = *std::move(read);
    resolved.description = absl::StrFormat("%s (%.0fM parameters)", spec,
                                           resolved.checkpoint.config.num_parameters() / 1e6);
  }
  return resolved;
}

absl::StatusOr<LoadedModel> LoadModel(const std::string& spec, const ModelOptions& options,
                                      uint64_t seed) {
  auto resolved = ResolveCheckpoint(spec, seed);
  if (!resolved.ok()) return resolved.status();
  LoadedModel loaded;
  loaded.random_weights = resolved->random_weights;
  loaded.description = resolved->description;
  auto model = Gpt2Model::Create(resolved->checkpoint, options);
  if (!model.ok()) return model.status();
  loaded.model = *std::move(model);
  return loaded;
}

}  // namespace nanoserve
