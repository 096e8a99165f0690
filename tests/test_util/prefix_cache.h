// Helpers of the tests that drive a PrefixCache directly: a tiny CPU cache,
// and page contents tagged with the token prefix they belong to, so that a
// page handed out twice, overwritten or evicted while pinned shows up as a
// wrong tag.
#ifndef NANOSERVE_TESTS_TEST_UTIL_PREFIX_CACHE_H_
#define NANOSERVE_TESTS_TEST_UTIL_PREFIX_CACHE_H_

#include <gtest/gtest.h>
#include <torch/types.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/time/time.h"
#include "absl/types/span.h"
#include "engine/kv_cache.h"
#include "engine/model.h"
#include "kv_cache/prefix_cache.h"

namespace nanoserve::testing {

// A CPU float cache of `num_pages` pages with the smallest geometry
// (1 layer, 1 head, head_dim 1): a page holds 2 * page_size floats.
inline std::unique_ptr<PrefixCache> MakeCache(int64_t page_size, int64_t num_pages,
                                              absl::Duration lease_ttl = absl::InfiniteDuration()) {
  PrefixCacheOptions options;
  options.pool.layout.page_size = page_size;
  options.pool.layout.n_layer = 1;
  options.pool.layout.n_head = 1;
  options.pool.layout.head_dim = 1;
  options.pool.byte_budget = num_pages * options.pool.layout.bytes_per_page();
  options.lease_ttl = lease_ttl;
  auto cache = PrefixCache::Create(options);
  EXPECT_TRUE(cache.ok()) << cache.status();
  return cache.ok() ? *std::move(cache) : nullptr;
}

// A value that identifies a token prefix (for page contents).
inline float PrefixTag(absl::Span<const int32_t> prefix) {
  uint32_t h = 2166136261u;
  for (int32_t t : prefix) h = (h ^ static_cast<uint32_t>(t + 7)) * 16777619u;
  return static_cast<float>(h % 1000003u);
}

// Fills every element of page `page` with `value`.
inline void FillPage(const torch::Tensor& storage, int32_t page, float value) {
  storage[page].fill_(value);
}

// True if every element of page `page` equals `value`.
inline bool PageHolds(const torch::Tensor& storage, int32_t page, float value) {
  return storage[page].eq(value).all().item<bool>();
}

// Writes into page `page` the tag of `prefix`: the tokens of the page's
// sequence up to the end of this page.
inline void TagPage(const torch::Tensor& storage, int32_t page, absl::Span<const int32_t> prefix) {
  FillPage(storage, page, PrefixTag(prefix));
}

// True if page `page` holds the tag of `prefix` (see TagPage).
inline bool HasTag(const torch::Tensor& storage, int32_t page, absl::Span<const int32_t> prefix) {
  return PageHolds(storage, page, PrefixTag(prefix));
}

// True if pages[i] holds the tag of the first (i + 1) pages of `tokens` for
// every i: the pages hold `tokens`' K/V as TagPage wrote it.
inline bool PagesHoldPrefix(const torch::Tensor& storage, absl::Span<const int32_t> tokens,
                            absl::Span<const int32_t> pages, int64_t page_size) {
  for (size_t i = 0; i < pages.size(); ++i) {
    const auto prefix = tokens.subspan(0, (i + 1) * page_size);
    if (!HasTag(storage, pages[i], prefix)) return false;
  }
  return true;
}

// A cache of `pages` pages for `model`'s K/V, on its device and dtype.
inline std::unique_ptr<PrefixCache> ModelCache(const Gpt2Model& model, int64_t page_size,
                                               int64_t pages) {
  PrefixCacheOptions o;
  o.pool.layout = KvPageLayout(model.config(), model.options().dtype, page_size);
  o.pool.device = model.options().device;
  o.pool.byte_budget = pages * o.pool.layout.bytes_per_page();
  auto cache = PrefixCache::Create(o);
  EXPECT_TRUE(cache.ok()) << cache.status();
  if (!cache.ok()) return nullptr;
  EXPECT_EQ((*cache)->num_pages(), pages);
  return *std::move(cache);
}

}  // namespace nanoserve::testing

#endif  // NANOSERVE_TESTS_TEST_UTIL_PREFIX_CACHE_H_
