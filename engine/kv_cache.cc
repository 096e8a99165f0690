#include "engine/kv_cache.h"

#include "absl/strings/str_cat.h"

namespace nanoserve {
namespace {

// A pool of `tokens` (0: batch x capacity) in whole pages, and the
// scratch page of the block tables.
std::unique_ptr<PrefixCache> OwnPool(const PageLayout& layout, int64_t batch, int64_t capacity,
                                     int64_t tokens, torch::Device device) {
  TORCH_CHECK(batch >= 1, "KvCache batch must be >= 1");
  TORCH_CHECK(capacity >= 1, "KvCache capacity must be >= 1");
  TORCH_CHECK(tokens >= 0, "KvCache pool tokens must be >= 0");
  const int64_t page = layout.page_size;
  const int64_t pages =
      (tokens > 0 ? (tokens + page - 1) / page : batch * ((capacity + page - 1) / page)) + 1;
  PrefixCacheOptions options;
  options.pool.layout = layout;
  options.pool.byte_budget = pages * layout.bytes_per_page();
  options.pool.device = device;
  absl::StatusOr<std::unique_ptr<PrefixCache>> pool = PrefixCache::Create(options);
  TORCH_CHECK(pool.ok(), "KvCache: ", pool.status().ToString());
  return *std::move(pool);
}

}  // namespace

PageLayout KvPageLayout(const Gpt2Config& config, torch::Dtype dtype, int64_t page_size) {
  PageLayout layout;
  layout.n_layer = config.n_layer;
  layout.n_head = config.n_head;
  layout.head_dim = config.head_dim();
  layout.page_size = page_size;
  layout.dtype = dtype;
  return layout;
}

KvCache::KvCache(const Gpt2Config& config, int64_t batch, int64_t capacity, torch::Dtype dtype,
                 torch::Device device, int64_t page_size, int64_t pool_tokens)
    : own_pool_(
          OwnPool(KvPageLayout(config, dtype, page_size), batch, capacity, pool_tokens, device)),
      layout_(own_pool_->options().pool.layout),
      tables_(std::make_unique<BlockTables>(own_pool_.get(), batch, capacity)) {}

KvCache::KvCache(PrefixCache* pool, int64_t batch, int64_t capacity)
    : layout_(pool->options().pool.layout),
      tables_(std::make_unique<BlockTables>(pool, batch, capacity)) {}

int64_t KvCache::bytes() const { return pool().storage().nbytes(); }

torch::Tensor KvCache::k_pages(int64_t layer) const {
  return pool().storage().select(1, layer).select(1, 0);  // (N, H, P, D)
}

torch::Tensor KvCache::v_pages(int64_t layer) const {
  return pool().storage().select(1, layer).select(1, 1);
}

}  // namespace nanoserve
