// The K/V of a batch of sequences, in pages of a KV page pool (Part B, paged).
//
// A KvCache is `batch` rows of up to `capacity` tokens each, over the pages
// of a PrefixCache's pool (kv_store/): each row is a block table of page ids
// (kv_store/block_tables.h), and layer l's keys of every page are one view
// of the pool, k_pages(l): (num_pages, H, page_size, D). The pool is either
//   * the cache's own, sized for batch x capacity tokens (it never runs out)
//     or for a number of tokens all rows share (a scheduler's page budget),
//   * or shared: a prefix cache's pool, so that rows read the tree's pages
//     in place (a prefix hit copies nothing) and a row's pages become the
//     tree's when stored. The pool's byte budget then bounds the tokens of
//     all rows together, not the rows.
// The pool is allocated once; pages never move, so a CUDA graph can capture
// a decode step that reads them through device copies of the block tables.
//
// Row r holds one sequence; length(r) tokens of it are cached (positions
// 0..length(r)-1). The model writes new K/V through the block tables and
// advances the lengths after a forward pass.
//
// Not thread safe: one generation loop owns a cache.
#ifndef NANOSERVE_ENGINE_KV_CACHE_H_
#define NANOSERVE_ENGINE_KV_CACHE_H_

#include <cstdint>
#include <memory>
#include <vector>

#include <torch/types.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/config.h"
#include "kv_cache/block_tables.h"
#include "kv_cache/page_layout.h"
#include "kv_cache/prefix_cache.h"

namespace nanoserve {

// The KV page layout of `config`'s K/V in `dtype`, `page_size` tokens a page.
PageLayout KvPageLayout(const Gpt2Config& config, torch::Dtype dtype, int64_t page_size);

// Tokens per page of a KvCache's own pool.
inline constexpr int64_t kDefaultKvPageSize = 16;

class KvCache {
 public:
  // Rows over a pool of their own that holds `pool_tokens` tokens (0:
  // batch x capacity, so that it never runs out), plus a scratch page.
  // INVALID_ARGUMENT unless batch, capacity, page_size >= 1 and
  // pool_tokens >= 0; RESOURCE_EXHAUSTED if the device cannot hold the pool.
  static absl::StatusOr<std::unique_ptr<KvCache>> Create(const Gpt2Config& config, int64_t batch,
                                                         int64_t capacity, torch::Dtype dtype,
                                                         torch::Device device,
                                                         int64_t page_size = kDefaultKvPageSize,
                                                         int64_t pool_tokens = 0);
  // Rows over `pool`'s pages (not owned; outlives the cache), shared with
  // its tree. REQUIRES: the pool's layout has this model's geometry.
  // RESOURCE_EXHAUSTED if the pool has no scratch page to spare.
  static absl::StatusOr<std::unique_ptr<KvCache>> Create(PrefixCache* pool, int64_t batch,
                                                         int64_t capacity);

  int64_t batch() const { return tables_->rows(); }
  int64_t capacity() const { return tables_->capacity(); }
  int64_t page_size() const { return tables_->page_size(); }
  int64_t n_layer() const { return layout_.n_layer; }
  int64_t length(int64_t row) const { return tables_->length(row); }
  const std::vector<int64_t>& lengths() const { return tables_->lengths(); }
  const PageLayout& layout() const { return layout_; }
  // Bytes of the pool.
  int64_t bytes() const;

  BlockTables& tables() { return *tables_; }
  const BlockTables& tables() const { return *tables_; }
  PrefixCache& pool() const { return tables_->pool(); }

  // Layer l's keys / values over every page of the pool:
  // (num_pages, H, page_size, D), views of the pool.
  torch::Tensor k_pages(int64_t layer) const;
  torch::Tensor v_pages(int64_t layer) const;

  // Empties a row (its pages go back to the pool, its leases are released).
  void Reset(int64_t row) { tables_->Reset(row); }
  // Sets a row's cached length. REQUIRES: 0 <= n <= the tokens its pages
  // cover.
  void set_length(int64_t row, int64_t n) { tables_->set_length(row, n); }

  // Writes K/V of positions [begin, begin + T) of row `row` from `kv`:
  // (n_layer, 2, H, T, D), any device and dtype (converted), making room
  // first: BlockTables::WriteTokens. The row's length is the caller's to set.
  absl::Status WriteTokens(int64_t row, int64_t begin, const torch::Tensor& kv) {
    return tables_->WriteTokens(row, begin, kv);
  }

  // K/V of positions [begin, end) of row `row`: (n_layer, 2, H, end-begin, D)
  // (BlockTables::ReadTokens).
  absl::StatusOr<torch::Tensor> ReadRow(int64_t row, int64_t begin, int64_t end) const {
    return tables_->ReadTokens(row, begin, end);
  }

 private:
  KvCache(std::unique_ptr<PrefixCache> own_pool, const PageLayout& layout,
          std::unique_ptr<BlockTables> tables);

  std::unique_ptr<PrefixCache> own_pool_;  // null for a shared pool
  PageLayout layout_;
  std::unique_ptr<BlockTables> tables_;
};

}  // namespace nanoserve

#endif  // NANOSERVE_ENGINE_KV_CACHE_H_
