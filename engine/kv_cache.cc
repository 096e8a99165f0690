#include "engine/kv_cache.h"

#include "absl/strings/str_cat.h"

namespace nanoserve {

PageLayout KvPageLayout(const Gpt2Config& config, torch::Dtype dtype, int64_t page_size) {
  PageLayout layout;
  layout.n_layer = config.n_layer;
  layout.n_head = config.n_head;
  layout.head_dim = config.head_dim();
  layout.page_size = page_size;
  layout.dtype = dtype;
  return layout;
}

absl::StatusOr<std::unique_ptr<KvCache>> KvCache::Create(const Gpt2Config& config, int64_t batch,
                                                         int64_t capacity, torch::Dtype dtype,
                                                         torch::Device device, int64_t page_size,
                                                         int64_t pool_tokens) {
  if (batch < 1 || capacity < 1 || page_size < 1 || pool_tokens < 0) {
    return absl::InvalidArgumentError(absl::StrCat("a KV cache of ", batch, " rows of ", capacity,
                                                   " tokens, pages of ", page_size,
                                                   " and a pool of ", pool_tokens, " tokens"));
  }
  // Whole pages for `pool_tokens` (0: batch x capacity), and the scratch
  // page of the block tables.
  const PageLayout layout = KvPageLayout(config, dtype, page_size);
  const int64_t pages = (pool_tokens > 0 ? (pool_tokens + page_size - 1) / page_size
                                         : batch * ((capacity + page_size - 1) / page_size)) +
                        1;
  PrefixCacheOptions options;
  options.pool.layout = layout;
  options.pool.byte_budget = pages * layout.bytes_per_page();
  options.pool.device = device;
  absl::StatusOr<std::unique_ptr<PrefixCache>> pool = PrefixCache::Create(options);
  if (!pool.ok()) return pool.status();
  absl::StatusOr<std::unique_ptr<BlockTables>> tables =
      BlockTables::Create(pool->get(), batch, capacity);
  if (!tables.ok()) return tables.status();
  return std::unique_ptr<KvCache>(new KvCache(*std::move(pool), layout, *std::move(tables)));
}

absl::StatusOr<std::unique_ptr<KvCache>> KvCache::Create(PrefixCache* pool, int64_t batch,
                                                         int64_t capacity) {
  absl::StatusOr<std::unique_ptr<BlockTables>> tables = BlockTables::Create(pool, batch, capacity);
  if (!tables.ok()) return tables.status();
  return std::unique_ptr<KvCache>(
      new KvCache(nullptr, pool->options().pool.layout, *std::move(tables)));
}

KvCache::KvCache(std::unique_ptr<PrefixCache> own_pool, const PageLayout& layout,
                 std::unique_ptr<BlockTables> tables)
    : own_pool_(std::move(own_pool)), layout_(layout), tables_(std::move(tables)) {}

int64_t KvCache::bytes() const { return pool().storage().nbytes(); }

torch::Tensor KvCache::k_pages(int64_t layer) const {
  return pool().storage().select(1, layer).select(1, 0);  // (N, H, P, D)
}

torch::Tensor KvCache::v_pages(int64_t layer) const {
  return pool().storage().select(1, layer).select(1, 1);
}

}  // namespace nanoserve
