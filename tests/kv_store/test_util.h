// Helpers shared by the kv_store tests.
#ifndef NANOSERVE_TESTS_KV_STORE_TEST_UTIL_H_
#define NANOSERVE_TESTS_KV_STORE_TEST_UTIL_H_

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/time/time.h"
#include "absl/types/span.h"
#include "kv_store/prefix_cache.h"

namespace nanoserve::testing {

// A CPU float cache of `num_pages` pages with the smallest geometry
// (1 layer, 1 head, head_dim 1): a page holds 2 * page_size floats.
inline std::unique_ptr<PrefixCache> MakeCache(
    int64_t page_size, int64_t num_pages,
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

}  // namespace nanoserve::testing

#endif  // NANOSERVE_TESTS_KV_STORE_TEST_UTIL_H_
