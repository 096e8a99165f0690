// GPT-2 as HF and nanoGPT define it: token and position embeddings, n_layer
// pre-LayerNorm blocks (attention, then a GELU-tanh MLP), a final LayerNorm
// and an lm_head tied to the token embedding.
//
// Forward runs only the tokens it is given. With a KvCache their keys and
// values are written into the rows' pages and attention covers the cached
// tokens too, read through the block tables (Part B); without one, the tokens are the whole
// sequence (Part A's plain loop).
//
// Thread safety: Forward is const on the weights but writes the cache it is
// given; concurrent calls need distinct caches.
#ifndef NANOSERVE_ENGINE_MODEL_H_
#define NANOSERVE_ENGINE_MODEL_H_

#include <cstdint>
#include <memory>
#include <vector>

#include <torch/types.h>

#include "absl/status/statusor.h"
#include "engine/attention.h"
#include "engine/checkpoint.h"
#include "engine/config.h"
#include "engine/kv_cache.h"

namespace nanoserve {

struct ModelOptions {
  // Where the weights and activations live: torch::kCPU or torch::kCUDA.
  torch::Device device = torch::kCPU;
  // Weight and activation dtype: kFloat, kBFloat16 or kHalf. Logits are
  // always returned in fp32.
  torch::Dtype dtype = torch::kFloat;
  // Which attention kernel the blocks use.
  AttentionKind attention = AttentionKind::kNaive;
};

// The rows of a KvCache a forward pass reads and extends.
struct CacheRows {
  KvCache* cache = nullptr;  // null: no cache, the input is the whole sequence
  int64_t row_begin = 0;     // input row b is cache row row_begin + b
};

class Gpt2Model {
 public:
  // Copies the checkpoint's weights to options.device in options.dtype.
  // INVALID_ARGUMENT if a weight is missing or misshapen, UNAVAILABLE if
  // CUDA is asked for and absent.
  static absl::StatusOr<std::unique_ptr<Gpt2Model>> Create(const Checkpoint& checkpoint,
                                                           const ModelOptions& options);

  const Gpt2Config& config() const { return config_; }
  const ModelOptions& options() const { return options_; }
  // Bytes held by the weights on the device.
  int64_t weight_bytes() const;

  // ids, positions: (B, T) int64 on any device. Returns the final hidden
  // states after ln_f, (B, T, C).
  //
  // Without a cache (rows.cache == nullptr) attention is causal over the T
  // tokens (square mask). With a cache, rows [row_begin, row_begin + B) are
  // used: each row's keys/values are written at positions length..length+T-1
  // into its pages (allocated, or copied where shared, first: see
  // BlockTables::PrepareWrite; throws if the pool has no room) and its
  // length grows by T; query t of a row attends to the row's first
  // length + t + 1 keys (a rectangular causal mask; for rows of equal length
  // one (T, length + T) mask, for unequal lengths a per-row key mask, e.g.
  // batched decode with T == 1). The caller gives the matching positions
  // (length..length+T-1 per row); positions must be < n_positions.
  // Throws c10::Error on misuse (callers validate input first).
  torch::Tensor Forward(const torch::Tensor& ids, const torch::Tensor& positions,
                        const CacheRows& rows = {}) const;

  // lm_head: hidden (..., C) -> logits (..., V) in fp32.
  torch::Tensor Logits(const torch::Tensor& hidden) const;

  // One block's weights on the device, HF's Conv1D layout ((in, out)).
  struct Block {
    torch::Tensor ln_1_w, ln_1_b, c_attn_w, c_attn_b, c_proj_w, c_proj_b;
    torch::Tensor ln_2_w, ln_2_b, fc_w, fc_b, mlp_proj_w, mlp_proj_b;
  };
  // The weights, for fast paths that run the same math with their own
  // kernels (engine/cuda/).
  const torch::Tensor& wte() const { return wte_; }  // (V, C)
  // wte with zero rows after V up to a multiple of 64: (V64, C). The
  // lm_head as a fast path multiplies by it (aligned shapes); logits past V
  // are 0 and to be ignored.
  const torch::Tensor& lm_head() const { return lm_head_; }
  const torch::Tensor& wpe() const { return wpe_; }  // (n_positions, C)
  const std::vector<Block>& blocks() const { return blocks_; }
  const torch::Tensor& ln_f_w() const { return ln_f_w_; }
  const torch::Tensor& ln_f_b() const { return ln_f_b_; }

 private:
  Gpt2Model(const Gpt2Config& config, const ModelOptions& options)
      : config_(config), options_(options) {}

  struct CacheAccess;
  // Makes room in the cache rows for T more tokens each and says where
  // every layer writes and reads them. Throws when the pool is full.
  CacheAccess PrepareCache(const CacheRows& rows, int64_t B, int64_t T, torch::Device device) const;
  // x: (B, T, C) -> (B, T, C); layer `l` of the cache rows, if any.
  torch::Tensor AttentionForward(const Block& block, int64_t layer, const torch::Tensor& x,
                                 const CacheAccess* cache) const;
  torch::Tensor MlpForward(const Block& block, const torch::Tensor& x) const;

  Gpt2Config config_;
  ModelOptions options_;
  torch::Tensor lm_head_;  // (V rounded up to 64, C): wte and zero rows
  torch::Tensor wte_;      // (V, C), the first rows of lm_head_; also the lm_head
  torch::Tensor wpe_;      // (n_positions, C)
  std::vector<Block> blocks_;
  torch::Tensor ln_f_w_, ln_f_b_;
};

}  // namespace nanoserve

#endif  // NANOSERVE_ENGINE_MODEL_H_
