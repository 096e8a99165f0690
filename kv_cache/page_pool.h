// A fixed pool of KV cache pages in one preallocated tensor.
//
// The pool owns `storage()`, a run of pages in the layout of page_layout.h,
//   (num_pages, n_layer, 2, n_head, page_size, head_dim)    // 2 = K, V
// allocated once at creation; it is never resized or reallocated, so its
// address is stable for the pool's lifetime (another process can map it, and
// a page is named by its index alone). Page p holds the keys and values of
// `page_size` consecutive token positions for every layer and head.
//
// The pool only does the bookkeeping of which pages are free: Allocate hands
// out page indices, Free takes them back. What a page holds, and who may
// write it, is up to the owner of the index (see PrefixCache).
//
// Invariants:
//   * every page index in [0, num_pages) is either on the free list exactly
//     once or allocated, never both;
//   * num_free() + (number of allocated pages) == num_pages().
//
// Thread safety: thread-compatible, not thread-safe. Const methods may be
// called concurrently; anything that allocates or frees needs external
// synchronization (PrefixCache holds its mutex around every call). Reading
// and writing page contents through storage() needs no lock from the pool.
#ifndef NANOSERVE_KV_CACHE_PAGE_POOL_H_
#define NANOSERVE_KV_CACHE_PAGE_POOL_H_

#include <torch/types.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kv_cache/page_layout.h"
#include "kv_cache/shared_memory.h"

namespace nanoserve {

struct PagePoolOptions {
  // What one page holds (see page_layout.h). Its page_size is the unit a
  // prefix cache built on the pool stores and matches.
  PageLayout layout;
  // Upper bound on the bytes of storage(); the pool holds
  // byte_budget / bytes_per_page whole pages (at least one, else creation
  // fails with INVALID_ARGUMENT).
  int64_t byte_budget = 0;
  // Where storage() lives.
  torch::Device device = torch::kCPU;
  // Allocate storage() in memory other processes of this host can map
  // (kv_store/shared_memory.h: a shared-memory segment on the CPU, CUDA
  // IPC on a GPU); segment() then says how. `epoch` names this pool's
  // life (written into a shared-memory segment's header).
  bool exported = false;
  uint64_t epoch = 0;
};

class PagePool {
 public:
  // Validates `options` and allocates storage. INVALID_ARGUMENT for bad
  // geometry or a budget below one page (or above 2^31 - 1 pages);
  // RESOURCE_EXHAUSTED if the device cannot allocate the storage;
  // UNAVAILABLE if exported memory cannot be had (the caller may create a
  // pool that is not exported instead).
  static absl::StatusOr<std::unique_ptr<PagePool>> Create(const PagePoolOptions& options);

  PagePool(const PagePool&) = delete;
  PagePool& operator=(const PagePool&) = delete;

  const PagePoolOptions& options() const { return options_; }
  const PageLayout& layout() const { return options_.layout; }
  int64_t page_size() const { return options_.layout.page_size; }
  int64_t bytes_per_page() const { return options_.layout.bytes_per_page(); }
  int64_t num_pages() const { return static_cast<int64_t>(is_free_.size()); }
  int64_t num_free() const { return static_cast<int64_t>(free_list_.size()); }

  // (num_pages, n_layer, 2, n_head, page_size, head_dim). Zeros at
  // creation; a page holds what its last owner wrote.
  const torch::Tensor& storage() const { return storage_; }
  // How another process maps storage(); transport kBytes unless
  // options().exported.
  const SharedSegment& segment() const { return segment_; }

  // Takes `n` pages off the free list (lowest indices first on a fresh pool).
  // All or nothing: RESOURCE_EXHAUSTED, and no change, if fewer than `n` are
  // free. INVALID_ARGUMENT if n < 0.
  absl::StatusOr<std::vector<int32_t>> Allocate(int64_t n);

  // Returns allocated pages to the free list. All or nothing:
  // INVALID_ARGUMENT, and no change, if a page is out of range, already free,
  // or listed twice.
  absl::Status Free(absl::Span<const int32_t> pages);

  // REQUIRES: 0 <= page < num_pages().
  bool is_free(int32_t page) const { return is_free_[page] != 0; }
  bool is_valid(int32_t page) const { return page >= 0 && page < num_pages(); }

  // Verifies the invariants above (for tests and debugging).
  absl::Status CheckInvariants() const;

 private:
  PagePool(const PagePoolOptions& options, torch::Tensor storage, SharedSegment segment);

  const PagePoolOptions options_;
  torch::Tensor storage_;
  const SharedSegment segment_;
  std::vector<int32_t> free_list_;  // a stack; back() is handed out next
  std::vector<uint8_t> is_free_;    // per page: 1 iff on free_list_
};

}  // namespace nanoserve

#endif  // NANOSERVE_KV_CACHE_PAGE_POOL_H_
