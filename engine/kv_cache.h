// Preallocated per-layer K/V storage for a batch of sequences (Part B).
//
// Each layer owns one K and one V tensor of shape (B, H, capacity, D),
// allocated once. New keys and values are written in place at each row's
// current length; nothing is concatenated or reallocated while generating, so
// the buffers keep their addresses (a CUDA graph can capture a decode step).
//
// Row r holds one sequence; length(r) tokens of it are cached (positions
// 0..length(r)-1). The model advances the lengths after a forward pass.
//
// Not thread safe: one generation loop owns a cache.
#ifndef NANOSERVE_ENGINE_KV_CACHE_H_
#define NANOSERVE_ENGINE_KV_CACHE_H_

#include <cstdint>
#include <vector>

#include <torch/torch.h>

#include "engine/config.h"
#include "kv_store/page_layout.h"

namespace nanoserve {

// The KV page layout of `config`'s K/V in `dtype`, `page_size` tokens a page.
PageLayout KvPageLayout(const Gpt2Config& config, torch::Dtype dtype, int64_t page_size);

class KvCache {
 public:
  // REQUIRES: batch >= 1, capacity >= 1.
  KvCache(const Gpt2Config& config, int64_t batch, int64_t capacity, torch::Dtype dtype,
          torch::Device device);

  int64_t batch() const { return static_cast<int64_t>(lengths_.size()); }
  int64_t capacity() const { return capacity_; }
  int64_t n_layer() const { return static_cast<int64_t>(k_.size()); }
  int64_t length(int64_t row) const { return lengths_[row]; }
  const std::vector<int64_t>& lengths() const { return lengths_; }
  // Bytes of K and V storage over all layers.
  int64_t bytes() const;

  // (B, H, capacity, D): all rows of one layer.
  torch::Tensor& k(int64_t layer) { return k_[layer]; }
  torch::Tensor& v(int64_t layer) { return v_[layer]; }
  const torch::Tensor& k(int64_t layer) const { return k_[layer]; }
  const torch::Tensor& v(int64_t layer) const { return v_[layer]; }

  // Sets a row's cached length (e.g. 0 to reuse the row for a new sequence,
  // or P after copying P cached tokens into it). REQUIRES: 0 <= n <= capacity.
  void set_length(int64_t row, int64_t n);

  // Every layer's K and V, for copies to and from pages (page_layout.h).
  RowsKv rows() const { return {k_, v_}; }

  // K/V of positions [begin, end) of row `row`: (n_layer, 2, H, end-begin, D).
  torch::Tensor ReadRow(int64_t row, int64_t begin, int64_t end) const;

 private:
  int64_t capacity_;
  std::vector<torch::Tensor> k_;  // per layer (B, H, capacity, D)
  std::vector<torch::Tensor> v_;  // per layer (B, H, capacity, D)
  std::vector<int64_t> lengths_;  // per row
};

}  // namespace nanoserve

#endif  // NANOSERVE_ENGINE_KV_CACHE_H_
