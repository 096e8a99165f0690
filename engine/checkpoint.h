// GPT-2 checkpoints: the canonical parameter set, loading HF's
// model.safetensors (+ config.json), saving in that format, and GPT-2's random
// initialisation for runs that do not need real weights.
//
// Canonical names and shapes (HF Conv1D layout: Linear weights are [in, out]),
// with C = n_embd, V = vocab_size, P = n_positions:
//   wte.weight [V, C]            wpe.weight [P, C]
//   h.{i}.ln_1.weight, .bias [C]
//   h.{i}.attn.c_attn.weight [C, 3C]   h.{i}.attn.c_attn.bias [3C]
//   h.{i}.attn.c_proj.weight [C, C]    h.{i}.attn.c_proj.bias [C]
//   h.{i}.ln_2.weight, .bias [C]
//   h.{i}.mlp.c_fc.weight [C, 4C]      h.{i}.mlp.c_fc.bias [4C]
//   h.{i}.mlp.c_proj.weight [4C, C]    h.{i}.mlp.c_proj.bias [C]
//   ln_f.weight, .bias [C]
// lm_head is tied to wte and is not stored.
//
// All functions are thread-compatible (no shared state).
#ifndef NANOSERVE_ENGINE_CHECKPOINT_H_
#define NANOSERVE_ENGINE_CHECKPOINT_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/config.h"
#include "engine/safetensors.h"

namespace nanoserve {

// Every canonical parameter of `config` with its shape, in a fixed order:
// wte, wpe, then layer 0..n_layer-1 (ln_1, c_attn, attn c_proj, ln_2, c_fc,
// mlp c_proj; weight before bias), then ln_f.
std::vector<std::pair<std::string, std::vector<int64_t>>> Gpt2ParameterShapes(
    const Gpt2Config& config);

// A model's hyper-parameters and weights.
struct Checkpoint {
  Gpt2Config config;
  // Exactly the names of Gpt2ParameterShapes(config), with those shapes;
  // CPU, floating point, in the dtype they were stored or made in.
  TensorMap weights;
};

// Checks that `weights` holds exactly the canonical parameters of `config`
// with their shapes and floating dtypes. INVALID_ARGUMENT otherwise, listing
// each missing tensor, unexpected tensor and wrong shape (name, expected and
// found) in the message.
absl::Status ValidateGpt2Weights(const Gpt2Config& config, const TensorMap& weights);

// Loads a checkpoint from `path`: a directory holding model.safetensors, or
// the .safetensors file itself. config.json beside the weights gives the
// config; without one, n_layer, n_embd, vocab_size and n_positions are
// inferred from the tensor shapes and n_head from the preset with that
// n_embd and n_layer (INVALID_ARGUMENT if there is none).
// Tensor names may carry HF's "transformer." prefix. HF's buffers
// h.{i}.attn.bias and h.{i}.attn.masked_bias (those exact names) are dropped;
// lm_head.weight is accepted if its shape equals wte's (its values are
// ignored: the head is tied). Errors: those of ReadSafetensors and
// LoadGpt2Config; INVALID_ARGUMENT as ValidateGpt2Weights, e.g. when
// config.json does not match the tensors, or when a name appears both with
// and without the prefix.
absl::StatusOr<Checkpoint> LoadCheckpoint(const std::string& path);

// Creates `dir` (and its parents) and writes dir/config.json in HF's style
// (model_type "gpt2", architectures ["GPT2LMHeadModel"], n_layer, n_head,
// n_embd, vocab_size, n_positions, n_ctx, layer_norm_epsilon,
// activation_function "gelu_new") and dir/model.safetensors with every name
// prefixed by `name_prefix` and metadata {"format": "pt"}. Errors:
// INVALID_ARGUMENT for a prefix other than "" and "transformer.", and for
// weights that fail ValidateGpt2Weights (nothing is written then); OS errors
// as their canonical codes.
absl::Status SaveCheckpoint(const std::string& dir, const Checkpoint& checkpoint,
                            const std::string& name_prefix = "transformer.");

// Random fp32 CPU weights with GPT-2's (nanoGPT's) scheme: embeddings and
// Linear weights ~ N(0, 0.02), the two c_proj weights per layer
// ~ N(0, 0.02 / sqrt(2 * n_layer)), biases 0, LayerNorm weights 1 and
// biases 0. Deterministic for a seed within one LibTorch build (its own
// generator; the global seed is untouched). REQUIRES: `config` is valid
// (as Gpt2ConfigFromJson accepts) and fits in memory (4 bytes a parameter).
Checkpoint RandomCheckpoint(const Gpt2Config& config, uint64_t seed);

}  // namespace nanoserve

#endif  // NANOSERVE_ENGINE_CHECKPOINT_H_
