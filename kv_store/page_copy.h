// Copies K/V between a page pool's storage and contiguous per-sequence
// tensors, in the layout the engine's KvCache loads and reads:
//   storage: (num_pages, n_layer, 2, n_head, page_size, head_dim)
//   kv:      (n_layer, 2, n_head, n_pages * page_size, head_dim)
// where token position j of kv lies in pages[j / page_size] at offset
// j % page_size. One index_select / index_copy_ per call, whatever the number
// of pages.
//
// Thread safety: the functions hold no state; concurrent calls are safe when
// they do not write the same pages (see PrefixCache for page ownership).
#ifndef NANOSERVE_KV_STORE_PAGE_COPY_H_
#define NANOSERVE_KV_STORE_PAGE_COPY_H_

#include <torch/torch.h>

#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace nanoserve {

// The K/V of `pages`, in order, as one new tensor
// (n_layer, 2, n_head, pages.size() * page_size, head_dim) on storage's
// device and dtype. INVALID_ARGUMENT if storage is not 6-D or a page is out
// of range.
absl::StatusOr<torch::Tensor> GatherPages(const torch::Tensor& storage,
                                          absl::Span<const int32_t> pages);

// Writes kv (n_layer, 2, n_head, pages.size() * page_size, head_dim), any
// device and dtype, into `pages` of storage (modified in place).
// INVALID_ARGUMENT, and no change, if shapes disagree, a page is out of
// range or listed twice.
absl::Status ScatterPages(const torch::Tensor& storage,
                          absl::Span<const int32_t> pages,
                          const torch::Tensor& kv);

}  // namespace nanoserve

#endif  // NANOSERVE_KV_STORE_PAGE_COPY_H_
