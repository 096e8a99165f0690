// Moves K/V between a prefix cache's page pool and KvCache rows for many
// sequences at once: one gather (or scatter) over the pool and one index
// write (or read) per layer over the cache, whatever the number of rows and
// pages. Prefix reuse for a batch of 32 prompts is then a few dozen kernels,
// not a few per page.
//
//   pool storage: (num_pages, n_layer, 2, n_head, page_size, head_dim)
//   cache:        per layer K and V (B, n_head, capacity, head_dim)
//
// Thread safety: none of its own; the caller owns the pages it reads or
// writes (see PrefixCache for page ownership) and the cache rows.
#ifndef NANOSERVE_ENGINE_PAGE_TRANSFER_H_
#define NANOSERVE_ENGINE_PAGE_TRANSFER_H_

#include <cstdint>
#include <vector>

#include <torch/torch.h>

#include "absl/types/span.h"
#include "engine/kv_cache.h"

namespace nanoserve {

// Token positions [begin, begin + pages.size() * page_size) of cache row
// `row`, held by `pages` (page i: positions begin + i * page_size ...).
struct PageRun {
  int64_t row = 0;
  int64_t begin = 0;
  std::vector<int32_t> pages;
};

// Pool -> cache. Each row's length becomes the end of its run.
// REQUIRES: runs fit the cache's capacity; pages are in range.
void LoadRuns(const torch::Tensor& storage, absl::Span<const PageRun> runs, KvCache& cache);

// Cache -> pool (storage is written in place).
// REQUIRES: the pages are the caller's to write; positions are within rows.
void StoreRuns(const KvCache& cache, absl::Span<const PageRun> runs, const torch::Tensor& storage);

}  // namespace nanoserve

#endif  // NANOSERVE_ENGINE_PAGE_TRANSFER_H_
