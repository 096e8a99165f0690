// The KV store's wire format for page bytes, shared by the store and its
// clients. A page stream is pages in order, each laid out C-order as
// (n_layer, 2, n_head, page_size, head_dim) in the layout's dtype: exactly a
// slice of the store's pool, (num_pages, n_layer, 2, n_head, page_size,
// head_dim). The engine's per-sequence K/V is (n_layer, 2, n_head, T, head_dim);
// these functions convert between the two.
#ifndef NANOSERVE_KV_STORE_CLIENT_KV_WIRE_H_
#define NANOSERVE_KV_STORE_CLIENT_KV_WIRE_H_

#include <cstdint>
#include <string>

#include <torch/torch.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/config.h"
#include "nanoserve/v1/common.pb.h"

namespace nanoserve {

v1::KvLayout MakeKvLayout(const Gpt2Config& config, torch::Dtype dtype, int64_t page_size);
// INVALID_ARGUMENT for an unknown dtype or a non-positive size.
absl::Status ValidateKvLayout(const v1::KvLayout& layout);
absl::StatusOr<torch::Dtype> KvLayoutDtype(const v1::KvLayout& layout);
bool SameKvLayout(const v1::KvLayout& a, const v1::KvLayout& b);
std::string KvLayoutString(const v1::KvLayout& layout);
// REQUIRES: ValidateKvLayout(layout).ok().
int64_t KvBytesPerPage(const v1::KvLayout& layout);

// kv (n_layer, 2, n_head, n_pages * page_size, head_dim), any device/dtype,
// -> pages (n_pages, n_layer, 2, n_head, page_size, head_dim), contiguous,
// on the CPU in the layout's dtype. INVALID_ARGUMENT on a shape mismatch.
absl::StatusOr<torch::Tensor> KvToPages(const torch::Tensor& kv, const v1::KvLayout& layout);
// The inverse: pages (n_pages, ...) -> kv (n_layer, 2, n_head, n_pages * page_size, head_dim).
torch::Tensor PagesToKv(const torch::Tensor& pages);
// Wraps `bytes` (n_pages whole pages) as a pages tensor that owns a copy.
// INVALID_ARGUMENT if the size is not a whole number of pages.
absl::StatusOr<torch::Tensor> PagesFromBytes(const std::string& bytes, const v1::KvLayout& layout);

}  // namespace nanoserve

#endif  // NANOSERVE_KV_STORE_CLIENT_KV_WIRE_H_
