// The KV page layout, and every copy in or out of pages.
//
// A page holds the keys and values of `page_size` consecutive token positions
// for every layer and head. A run of n pages, wherever it lives, is one tensor
//
//   pages: (n, n_layer, 2, n_head, page_size, head_dim)      // 2 = K, V
//
// in the layout's dtype: every KV pool is such a tensor (n = its page
// count; the engine's sequences read and write theirs through block tables,
// kv_store/block_tables.h), and so is a run of pages staged for the wire,
// where it is exactly its bytes in C order (page after page).
//
// Errors: INVALID_ARGUMENT for a tensor or page list that does not fit the
// layout (no data is changed then); LibTorch failures map as RunTorch says
// (kv_store/torch_status.h). Thread safety: stateless; concurrent calls are
// safe when they do not write the same pages or rows.
#ifndef NANOSERVE_KV_CACHE_PAGE_LAYOUT_H_
#define NANOSERVE_KV_CACHE_PAGE_LAYOUT_H_

#include <cstdint>
#include <string>
#include <vector>

#include <torch/types.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace nanoserve {

struct PageLayout {
  // Transformer layers, attention heads per layer, size of one head. >= 1.
  int64_t n_layer = 0;
  int64_t n_head = 0;
  int64_t head_dim = 0;
  // Token positions per page. >= 1.
  int64_t page_size = 16;
  // Element type of K and V.
  torch::Dtype dtype = torch::kFloat;

  // n_layer * 2 * n_head * page_size * head_dim * sizeof(dtype).
  int64_t bytes_per_page() const;
  // {n, n_layer, 2, n_head, page_size, head_dim}.
  std::vector<int64_t> shape(int64_t n_pages) const;
  // INVALID_ARGUMENT for a size below 1 or absurdly large (a layer, head or
  // head_dim count over 65536, a page over 65536 positions or 2^40 bytes).
  absl::Status Validate() const;
  // "{fp32, n_layer 12, n_head 12, head_dim 64, page_size 16}".
  std::string ToString() const;

  bool operator==(const PageLayout& o) const {
    return n_layer == o.n_layer && n_head == o.n_head && head_dim == o.head_dim &&
           page_size == o.page_size && dtype == o.dtype;
  }
  bool operator!=(const PageLayout& o) const { return !(*this == o); }
};

// n_pages pages of `layout` on `device`, contents undefined.
// RESOURCE_EXHAUSTED if the device cannot hold them.
absl::StatusOr<torch::Tensor> EmptyPages(const PageLayout& layout, int64_t n_pages,
                                         torch::Device device);

// ---- pages of a pool <-> a staged run ----

// pool[pages[0]], pool[pages[1]], ... as a new run on `device`.
absl::StatusOr<torch::Tensor> ReadPages(const torch::Tensor& pool, absl::Span<const int32_t> pages,
                                        torch::Device device);
// pool[pages[i]] = staged[i] for each i (pool written in place).
absl::Status WritePages(const torch::Tensor& pool, absl::Span<const int32_t> pages,
                        const torch::Tensor& staged);

// ---- a run of pages <-> K/V by position ----

// A run of pages (n, n_layer, 2, n_head, P, head_dim) as the K/V of its
// n * P positions in order: (n_layer, 2, n_head, n * P, head_dim), any page
// size. Throws c10::Error for a tensor that is not 6-D.
torch::Tensor PagesAsTokens(const torch::Tensor& pages);
// The inverse: K/V of T positions (n_layer, 2, n_head, T, head_dim) as a run
// of T / page_size contiguous pages. Throws c10::Error unless page_size
// divides T.
torch::Tensor TokensAsPages(const torch::Tensor& kv, int64_t page_size);

// ---- the wire: a staged run's bytes ----

// `bytes` (whole pages in C order) as a new run on the CPU.
// INVALID_ARGUMENT if it is not a whole number of pages or the layout is bad.
absl::StatusOr<torch::Tensor> PagesFromBytes(const PageLayout& layout, absl::string_view bytes);

// Copies bytes [offset, offset + size) of the run pool[pages[0]],
// pool[pages[1]], ... into `out`, straight from a CPU pool (no staging).
// REQUIRES: pool is a contiguous CPU pool of `layout`; pages are in range;
// the range lies within pages.size() * layout.bytes_per_page().
void CopyPoolBytes(const torch::Tensor& pool, const PageLayout& layout,
                   absl::Span<const int32_t> pages, int64_t offset, int64_t size, char* out);

}  // namespace nanoserve

#endif  // NANOSERVE_KV_CACHE_PAGE_LAYOUT_H_
