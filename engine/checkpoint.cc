#include "engine/checkpoint.h"

#include <sys/stat.h>
#include <sys/types.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <fstream>
#include <set>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "base/stable_hash.h"

namespace nanoserve {
namespace {

constexpr char kHfPrefix[] = "transformer.";
constexpr char kWeightsFile[] = "model.safetensors";
constexpr char kConfigFile[] = "config.json";
constexpr char kLmHead[] = "lm_head.weight";
// Problems listed in one error message before "and N more".
constexpr size_t kMaxListedProblems = 8;

// Paths use POSIX calls, not std::filesystem: the pip LibTorch's libtorch.so
// exports std::filesystem symbols of its own (remove_all, ...) that the
// dynamic linker binds in place of libstdc++'s, and they crash.

bool IsDirectory(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool PathExists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

std::string JoinPath(const std::string& dir, const std::string& name) {
  if (dir.empty() || dir.back() == '/') return dir + name;
  return dir + "/" + name;
}

// "a/b/c" -> "a/b"; "c" -> "."; "/c" -> "/".
std::string ParentDir(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

// mkdir -p.
absl::Status CreateDirectories(const std::string& dir) {
  for (size_t end = dir.find('/', 1);; end = dir.find('/', end + 1)) {
    const std::string prefix = dir.substr(0, end);
    if (::mkdir(prefix.c_str(), 0755) != 0 && errno != EEXIST) {
      const int err = errno;
      return absl::ErrnoToStatus(err, absl::StrCat("cannot create directory ", prefix));
    }
    if (end == std::string::npos) break;
  }
  if (!IsDirectory(dir)) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot create directory ", dir, ": not a directory"));
  }
  return absl::OkStatus();
}

std::string ShapeString(c10::IntArrayRef shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// If `name` is "h.{digits}.<rest>", sets *layer and *rest and returns true.
bool ParseLayerName(absl::string_view name, int64_t* layer, absl::string_view* rest) {
  if (!absl::ConsumePrefix(&name, "h.")) return false;
  size_t digits = 0;
  while (digits < name.size() && digits < 9 &&
         std::isdigit(static_cast<unsigned char>(name[digits]))) {
    ++digits;
  }
  if (digits == 0 || digits >= name.size() || name[digits] != '.') {
    return false;
  }
  *layer = std::stoll(std::string(name.substr(0, digits)));
  *rest = name.substr(digits + 1);
  return true;
}

// HF's GPT2Attention registers the causal mask as h.{i}.attn.bias and a
// constant as h.{i}.attn.masked_bias; older exports store them.
bool IsHfAttentionBuffer(absl::string_view name) {
  int64_t layer;
  absl::string_view rest;
  return ParseLayerName(name, &layer, &rest) && (rest == "attn.bias" || rest == "attn.masked_bias");
}

// Config from the tensor shapes, for a checkpoint without config.json.
absl::StatusOr<Gpt2Config> InferConfig(const TensorMap& weights) {
  auto wte = weights.find("wte.weight");
  auto wpe = weights.find("wpe.weight");
  if (wte == weights.end() || wpe == weights.end() || wte->second.dim() != 2 ||
      wpe->second.dim() != 2) {
    return absl::InvalidArgumentError(
        "no config.json, and wte.weight and wpe.weight (2-D) are needed to "
        "infer the config");
  }
  Gpt2Config config;
  config.vocab_size = wte->second.size(0);
  config.n_embd = wte->second.size(1);
  config.n_positions = wpe->second.size(0);
  config.n_layer = 0;
  for (const auto& [name, tensor] : weights) {
    int64_t layer;
    absl::string_view rest;
    if (ParseLayerName(name, &layer, &rest)) {
      config.n_layer = std::max(config.n_layer, layer + 1);
    }
  }
  for (const char* preset : {"gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"}) {
    const Gpt2Config candidate = *Gpt2Preset(preset);
    if (candidate.n_embd == config.n_embd && candidate.n_layer == config.n_layer) {
      config.n_head = candidate.n_head;
      return config;
    }
  }
  return absl::InvalidArgumentError(
      absl::StrCat("no config.json, and n_head cannot be inferred: no GPT-2 preset has "
                   "n_embd ",
                   config.n_embd, " and n_layer ", config.n_layer));
}

absl::Status WriteConfigJson(const std::string& path, const Gpt2Config& config) {
  const nlohmann::json json = {
      {"model_type", "gpt2"},
      {"architectures", {"GPT2LMHeadModel"}},
      {"n_layer", config.n_layer},
      {"n_head", config.n_head},
      {"n_embd", config.n_embd},
      {"vocab_size", config.vocab_size},
      {"n_positions", config.n_positions},
      {"n_ctx", config.n_positions},
      {"layer_norm_epsilon", config.layer_norm_epsilon},
      {"activation_function", "gelu_new"},
  };
  errno = 0;
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << json.dump(2) << "\n";
  out.close();
  if (!out) {
    const int err = errno != 0 ? errno : EIO;  // streams need not set errno
    return absl::ErrnoToStatus(err, absl::StrCat("cannot write ", path));
  }
  return absl::OkStatus();
}

}  // namespace

std::vector<std::pair<std::string, std::vector<int64_t>>> Gpt2ParameterShapes(
    const Gpt2Config& config) {
  const int64_t c = config.n_embd;
  std::vector<std::pair<std::string, std::vector<int64_t>>> shapes = {
      {"wte.weight", {config.vocab_size, c}},
      {"wpe.weight", {config.n_positions, c}},
  };
  for (int64_t i = 0; i < config.n_layer; ++i) {
    const std::string h = absl::StrCat("h.", i, ".");
    shapes.push_back({h + "ln_1.weight", {c}});
    shapes.push_back({h + "ln_1.bias", {c}});
    shapes.push_back({h + "attn.c_attn.weight", {c, 3 * c}});
    shapes.push_back({h + "attn.c_attn.bias", {3 * c}});
    shapes.push_back({h + "attn.c_proj.weight", {c, c}});
    shapes.push_back({h + "attn.c_proj.bias", {c}});
    shapes.push_back({h + "ln_2.weight", {c}});
    shapes.push_back({h + "ln_2.bias", {c}});
    shapes.push_back({h + "mlp.c_fc.weight", {c, 4 * c}});
    shapes.push_back({h + "mlp.c_fc.bias", {4 * c}});
    shapes.push_back({h + "mlp.c_proj.weight", {4 * c, c}});
    shapes.push_back({h + "mlp.c_proj.bias", {c}});
  }
  shapes.push_back({"ln_f.weight", {c}});
  shapes.push_back({"ln_f.bias", {c}});
  return shapes;
}

absl::Status ValidateGpt2Weights(const Gpt2Config& config, const TensorMap& weights) {
  std::vector<std::string> problems;
  std::set<std::string> expected;
  for (const auto& [name, shape] : Gpt2ParameterShapes(config)) {
    expected.insert(name);
    auto it = weights.find(name);
    if (it == weights.end()) {
      problems.push_back(
          absl::StrCat("missing tensor ", name, " (expected ", ShapeString(shape), ")"));
    } else if (!it->second.defined()) {
      problems.push_back(absl::StrCat("tensor ", name, " is undefined"));
    } else if (it->second.sizes() != c10::IntArrayRef(shape)) {
      problems.push_back(absl::StrCat("tensor ", name, " has shape ",
                                      ShapeString(it->second.sizes()), ", expected ",
                                      ShapeString(shape)));
    } else if (!it->second.is_floating_point()) {
      problems.push_back(absl::StrCat("tensor ", name, " has dtype ",
                                      c10::toString(it->second.scalar_type()),
                                      ", expected floating point"));
    }
  }
  for (const auto& [name, tensor] : weights) {
    if (expected.count(name) == 0) {
      problems.push_back(absl::StrCat("unexpected tensor ", name));
    }
  }
  if (problems.empty()) return absl::OkStatus();
  const size_t listed = std::min(problems.size(), kMaxListedProblems);
  std::string message = absl::StrJoin(problems.begin(), problems.begin() + listed, "; ");
  if (listed < problems.size()) {
    absl::StrAppend(&message, "; and ", problems.size() - listed, " more");
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "weights do not match GPT-2 config (n_layer ", config.n_layer, ", n_embd ", config.n_embd,
      ", vocab_size ", config.vocab_size, ", n_positions ", config.n_positions, "): ", message));
}

absl::StatusOr<Checkpoint> LoadCheckpoint(const std::string& path) {
  const std::string weights_path = IsDirectory(path) ? JoinPath(path, kWeightsFile) : path;
  const std::string dir = ParentDir(weights_path);

  absl::StatusOr<TensorMap> stored = ReadSafetensors(weights_path);
  if (!stored.ok()) return stored.status();

  // Canonical names: prefix stripped, HF buffers dropped, lm_head aside.
  TensorMap weights;
  torch::Tensor lm_head;
  for (auto& [stored_name, tensor] : *stored) {
    absl::string_view name = stored_name;
    absl::ConsumePrefix(&name, kHfPrefix);
    if (IsHfAttentionBuffer(name)) continue;
    if (name == kLmHead) {
      lm_head = tensor;
      continue;
    }
    if (!weights.emplace(std::string(name), std::move(tensor)).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(weights_path, ": tensor ", name,
                       " is stored both with and without the \"transformer.\" prefix"));
    }
  }

  Checkpoint checkpoint;
  const std::string config_path = JoinPath(dir, kConfigFile);
  absl::StatusOr<Gpt2Config> config =
      PathExists(config_path) ? LoadGpt2Config(config_path) : InferConfig(weights);
  if (!config.ok()) {
    return absl::Status(config.status().code(),
                        absl::StrCat(weights_path, ": ", config.status().message()));
  }
  checkpoint.config = *config;

  auto wte = weights.find("wte.weight");
  if (lm_head.defined() && wte != weights.end() && lm_head.sizes() != wte->second.sizes()) {
    return absl::InvalidArgumentError(
        absl::StrCat(weights_path, ": tensor ", kLmHead, " has shape ",
                     ShapeString(lm_head.sizes()), " but wte.weight has ",
                     ShapeString(wte->second.sizes()), "; only a head tied to wte is supported"));
  }
  if (absl::Status s = ValidateGpt2Weights(checkpoint.config, weights); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat(weights_path, ": ", s.message()));
  }
  checkpoint.weights = std::move(weights);
  return checkpoint;
}

absl::Status SaveCheckpoint(const std::string& dir, const Checkpoint& checkpoint,
                            const std::string& name_prefix) {
  if (name_prefix != "" && name_prefix != kHfPrefix) {
    return absl::InvalidArgumentError(
        absl::StrCat("name prefix must be \"\" or \"transformer.\", got \"", name_prefix, "\""));
  }
  if (absl::Status s = ValidateGpt2Weights(checkpoint.config, checkpoint.weights); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat("cannot save to ", dir, ": ", s.message()));
  }
  if (absl::Status s = CreateDirectories(dir); !s.ok()) return s;
  if (absl::Status s = WriteConfigJson(JoinPath(dir, kConfigFile), checkpoint.config); !s.ok()) {
    return s;
  }
  TensorMap named;
  for (const auto& [name, tensor] : checkpoint.weights) {
    named.emplace(name_prefix + name, tensor);
  }
  return WriteSafetensors(JoinPath(dir, kWeightsFile), named, {{"format", "pt"}});
}

Checkpoint RandomCheckpoint(const Gpt2Config& config, uint64_t seed) {
  constexpr double kStd = 0.02;
  // GPT-2 scales the residual projections by 1/sqrt(number of residual adds).
  const double proj_std = kStd / std::sqrt(2.0 * config.n_layer);
  // Normal samples come in fixed-size chunks, chunk k (counted across the
  // whole checkpoint) drawn from its own generator seeded by (seed, k): the
  // chunks fill in parallel and the result does not depend on thread count.
  constexpr int64_t kChunk = int64_t{1} << 20;
  uint64_t next_chunk = 0;
  Checkpoint checkpoint;
  checkpoint.config = config;
  for (const auto& [name, shape] : Gpt2ParameterShapes(config)) {
    torch::Tensor tensor;
    if (absl::StrContains(name, "ln_")) {
      tensor = absl::EndsWith(name, ".weight") ? torch::ones(shape) : torch::zeros(shape);
    } else if (absl::EndsWith(name, ".bias")) {
      tensor = torch::zeros(shape);
    } else {
      const double std = absl::EndsWith(name, "c_proj.weight") ? proj_std : kStd;
      tensor = EmptyCpuTensorToFill(shape, torch::kFloat32);
      torch::Tensor flat = tensor.view({-1});
      const int64_t numel = flat.numel();
      const int64_t num_chunks = (numel + kChunk - 1) / kChunk;
      const uint64_t first_chunk = next_chunk;
      at::parallel_for(0, num_chunks, 1, [&](int64_t begin, int64_t end) {
        for (int64_t k = begin; k < end; ++k) {
          at::Generator generator =
              at::detail::createCPUGenerator(SplitMix64(seed ^ SplitMix64(first_chunk + k)));
          flat.slice(0, k * kChunk, std::min(numel, (k + 1) * kChunk)).normal_(0.0, std, generator);
        }
      });
      next_chunk += num_chunks;
    }
    checkpoint.weights.emplace(name, std::move(tensor));
  }
  return checkpoint;
}

}  // namespace nanoserve
