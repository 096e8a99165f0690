#include "engine/config.h"

#include <cerrno>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace nanoserve {
namespace {

// Sizes above this are certainly not GPT-2; with the parameter count checked
// too (ParameterCount), every later size computation stays in int64.
constexpr int64_t kMaxDimension = int64_t{1} << 24;
// Layers and heads beyond these, or more parameters than this (GPT-2 XL has
// 1.6e9), are refused before anything is allocated.
constexpr int64_t kMaxLayersOrHeads = 1024;
constexpr int64_t kMaxParameters = int64_t{1} << 35;
// layer_norm_epsilon must be in (0, kMaxLayerNormEpsilon] (GPT-2: 1e-5).
constexpr double kMaxLayerNormEpsilon = 0.1;

// num_parameters() in 128 bits: sizes of up to kMaxDimension reach 2^77.
__int128 ParameterCount(const Gpt2Config& config) {
  const __int128 c = config.n_embd;
  // ln_1 (2C) + c_attn (C*3C + 3C) + attn c_proj (C*C + C) + ln_2 (2C)
  // + c_fc (C*4C + 4C) + mlp c_proj (4C*C + C) = 12C² + 13C.
  const __int128 per_layer = 12 * c * c + 13 * c;
  return config.vocab_size * c + config.n_positions * c + config.n_layer * per_layer + 2 * c;
}

// Reads the integer field `key` of `json` into `*value` if present.
absl::Status ReadPositiveInt(const nlohmann::json& json, const char* key, int64_t* value) {
  auto it = json.find(key);
  if (it == json.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_number_integer()) {
    return absl::InvalidArgumentError(
        absl::StrCat("config field \"", key, "\" must be an integer, got ", it->dump()));
  }
  const int64_t v = it->get<int64_t>();
  if (it->is_number_unsigned() && it->get<uint64_t>() > uint64_t{INT64_MAX}) {
    return absl::InvalidArgumentError(absl::StrCat("config field \"", key, "\" is out of range"));
  }
  if (v <= 0 || v > kMaxDimension) {
    return absl::InvalidArgumentError(
        absl::StrCat("config field \"", key, "\" must be in [1, ", kMaxDimension, "], got ", v));
  }
  *value = v;
  return absl::OkStatus();
}

}  // namespace

int64_t Gpt2Config::num_parameters() const { return static_cast<int64_t>(ParameterCount(*this)); }

absl::StatusOr<Gpt2Config> Gpt2Preset(absl::string_view name) {
  Gpt2Config config;
  if (name == "gpt2") {
    config.n_layer = 12, config.n_head = 12, config.n_embd = 768;
  } else if (name == "gpt2-medium") {
    config.n_layer = 24, config.n_head = 16, config.n_embd = 1024;
  } else if (name == "gpt2-large") {
    config.n_layer = 36, config.n_head = 20, config.n_embd = 1280;
  } else if (name == "gpt2-xl") {
    config.n_layer = 48, config.n_head = 25, config.n_embd = 1600;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "unknown GPT-2 preset \"", name, "\"; expected gpt2, gpt2-medium, gpt2-large or gpt2-xl"));
  }
  return config;
}

absl::StatusOr<Gpt2Config> Gpt2ConfigFromJson(absl::string_view json_text) {
  const nlohmann::json json =
      nlohmann::json::parse(json_text.begin(), json_text.end(), /*cb=*/nullptr,
                            /*allow_exceptions=*/false);
  if (json.is_discarded()) {
    return absl::InvalidArgumentError("config is not valid JSON");
  }
  if (!json.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat("config must be a JSON object, got ", json.type_name()));
  }
  Gpt2Config config;
  for (const auto& [key, field] : {std::pair<const char*, int64_t*>{"n_layer", &config.n_layer},
                                   {"n_head", &config.n_head},
                                   {"n_embd", &config.n_embd},
                                   {"vocab_size", &config.vocab_size},
                                   {"n_ctx", &config.n_positions},  // older alias, overridden below
                                   {"n_positions", &config.n_positions}}) {
    if (absl::Status s = ReadPositiveInt(json, key, field); !s.ok()) return s;
  }
  if (auto it = json.find("layer_norm_epsilon"); it != json.end() && !it->is_null()) {
    if (!it->is_number() || !(it->get<double>() > 0.0) ||
        !(it->get<double>() <= kMaxLayerNormEpsilon)) {
      return absl::InvalidArgumentError(
          absl::StrCat("config field \"layer_norm_epsilon\" must be in (0, ", kMaxLayerNormEpsilon,
                       "], got ", it->dump()));
    }
    config.layer_norm_epsilon = it->get<double>();
  }
  if (ParameterCount(config) > INT64_MAX) {
    return absl::InvalidArgumentError(
        "config has more parameters than an int64 counts (n_layer, n_embd too large)");
  }
  if (config.n_embd % config.n_head != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "n_embd (", config.n_embd, ") is not divisible by n_head (", config.n_head, ")"));
  }
  if (config.n_layer > kMaxLayersOrHeads || config.n_head > kMaxLayersOrHeads) {
    return absl::InvalidArgumentError(absl::StrCat("n_layer (", config.n_layer, ") and n_head (",
                                                   config.n_head, ") must be at most ",
                                                   kMaxLayersOrHeads));
  }
  if (config.num_parameters() > kMaxParameters) {
    return absl::InvalidArgumentError(absl::StrCat("the config describes ", config.num_parameters(),
                                                   " parameters, more than the limit of ",
                                                   kMaxParameters));
  }
  return config;
}

absl::StatusOr<Gpt2Config> LoadGpt2Config(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    const int err = errno;
    return absl::ErrnoToStatus(err != 0 ? err : ENOENT, absl::StrCat("cannot open config ", path));
  }
  std::stringstream text;
  text << in.rdbuf();
  absl::StatusOr<Gpt2Config> config = Gpt2ConfigFromJson(text.str());
  if (!config.ok()) {
    return absl::Status(config.status().code(),
                        absl::StrCat(path, ": ", config.status().message()));
  }
  return config;
}

}  // namespace nanoserve
