#include "kv_store/client/kv_wire.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/device.h"

namespace nanoserve {

v1::KvLayout MakeKvLayout(const Gpt2Config& config, torch::Dtype dtype, int64_t page_size) {
  v1::KvLayout layout;
  layout.set_dtype(DtypeName(dtype));
  layout.set_n_layer(config.n_layer);
  layout.set_n_head(config.n_head);
  layout.set_head_dim(config.head_dim());
  layout.set_page_size(page_size);
  return layout;
}

absl::StatusOr<torch::Dtype> KvLayoutDtype(const v1::KvLayout& layout) {
  return ParseDtype(layout.dtype());
}

absl::Status ValidateKvLayout(const v1::KvLayout& layout) {
  if (!KvLayoutDtype(layout).ok()) {
    return absl::InvalidArgumentError(absl::StrCat("unknown KV dtype '", layout.dtype(), "'"));
  }
  if (layout.n_layer() < 1 || layout.n_head() < 1 || layout.head_dim() < 1 ||
      layout.page_size() < 1 || layout.n_layer() > 4096 || layout.n_head() > 4096 ||
      layout.head_dim() > 65536 || layout.page_size() > 65536) {
    return absl::InvalidArgumentError(absl::StrCat("bad KV layout ", KvLayoutString(layout)));
  }
  return absl::OkStatus();
}

bool SameKvLayout(const v1::KvLayout& a, const v1::KvLayout& b) {
  return a.dtype() == b.dtype() && a.n_layer() == b.n_layer() && a.n_head() == b.n_head() &&
         a.head_dim() == b.head_dim() && a.page_size() == b.page_size();
}

std::string KvLayoutString(const v1::KvLayout& l) {
  return absl::StrFormat("{%s, n_layer %d, n_head %d, head_dim %d, page_size %d}", l.dtype(),
                         l.n_layer(), l.n_head(), l.head_dim(), l.page_size());
}

int64_t KvBytesPerPage(const v1::KvLayout& l) {
  return l.n_layer() * 2 * l.n_head() * l.page_size() * l.head_dim() *
         static_cast<int64_t>(c10::elementSize(*KvLayoutDtype(l)));
}

absl::StatusOr<torch::Tensor> KvToPages(const torch::Tensor& kv, const v1::KvLayout& l) {
  const int64_t ps = l.page_size();
  if (kv.dim() != 5 || kv.size(0) != l.n_layer() || kv.size(1) != 2 || kv.size(2) != l.n_head() ||
      kv.size(4) != l.head_dim() || kv.size(3) % ps != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("K/V of shape ", c10::str(kv.sizes()), " does not fit ", KvLayoutString(l)));
  }
  const int64_t n_pages = kv.size(3) / ps;
  // (L, 2, H, n*P, D) -> (L, 2, H, n, P, D) -> (n, L, 2, H, P, D)
  return kv.to(torch::kCPU, *KvLayoutDtype(l))
      .view({l.n_layer(), 2, l.n_head(), n_pages, ps, l.head_dim()})
      .permute({3, 0, 1, 2, 4, 5})
      .contiguous();
}

torch::Tensor PagesToKv(const torch::Tensor& pages) {
  const int64_t n = pages.size(0), L = pages.size(1), H = pages.size(3), P = pages.size(4),
                D = pages.size(5);
  // (n, L, 2, H, P, D) -> (L, 2, H, n, P, D) -> (L, 2, H, n*P, D)
  return pages.permute({1, 2, 3, 0, 4, 5}).reshape({L, 2, H, n * P, D});
}

absl::StatusOr<torch::Tensor> PagesFromBytes(const std::string& bytes, const v1::KvLayout& l) {
  const int64_t per_page = KvBytesPerPage(l);
  const int64_t size = static_cast<int64_t>(bytes.size());
  if (size % per_page != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(size, " bytes is not a whole number of ", per_page, "-byte pages"));
  }
  torch::Tensor pages = torch::empty({size / per_page, l.n_layer(), 2, l.n_head(), l.page_size(),
                                      l.head_dim()},
                                     torch::TensorOptions().dtype(*KvLayoutDtype(l)));
  std::memcpy(pages.data_ptr(), bytes.data(), bytes.size());
  return pages;
}

}  // namespace nanoserve
