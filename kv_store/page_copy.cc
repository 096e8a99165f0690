#include "kv_store/page_copy.h"

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"

namespace nanoserve {
namespace {

// Validates `pages` against storage's page count and returns them as an
// int64 index tensor on storage's device.
absl::StatusOr<torch::Tensor> PageIndex(const torch::Tensor& storage,
                                        absl::Span<const int32_t> pages,
                                        bool unique) {
  if (storage.dim() != 6 || storage.size(2) != 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        "page storage must be (pages, n_layer, 2, n_head, page_size, "
        "head_dim); has ",
        storage.dim(), " dims"));
  }
  std::vector<int64_t> index(pages.begin(), pages.end());
  for (int64_t page : index) {
    if (page < 0 || page >= storage.size(0)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "page ", page, " out of range [0, ", storage.size(0), ")"));
    }
  }
  if (unique) {
    std::vector<int64_t> sorted = index;
    std::sort(sorted.begin(), sorted.end());
    if (std::adjacent_find(sorted.begin(), sorted.end()) != sorted.end()) {
      return absl::InvalidArgumentError("a page is listed twice");
    }
  }
  return torch::tensor(index, torch::kLong).to(storage.device());
}

}  // namespace

absl::StatusOr<torch::Tensor> GatherPages(const torch::Tensor& storage,
                                          absl::Span<const int32_t> pages) {
  absl::StatusOr<torch::Tensor> index = PageIndex(storage, pages, false);
  if (!index.ok()) return index.status();
  const int64_t n = static_cast<int64_t>(pages.size());
  // (n, L, 2, H, ps, D) -> (L, 2, H, n, ps, D) -> (L, 2, H, n*ps, D)
  return storage.index_select(0, *index)
      .permute({1, 2, 3, 0, 4, 5})
      .reshape({storage.size(1), 2, storage.size(3), n * storage.size(4),
                storage.size(5)});
}

absl::Status ScatterPages(const torch::Tensor& storage,
                          absl::Span<const int32_t> pages,
                          const torch::Tensor& kv) {
  absl::StatusOr<torch::Tensor> index = PageIndex(storage, pages, true);
  if (!index.ok()) return index.status();
  const int64_t n = static_cast<int64_t>(pages.size());
  const int64_t page_size = storage.size(4);
  const std::vector<int64_t> want = {storage.size(1), 2, storage.size(3),
                                     n * page_size, storage.size(5)};
  if (!kv.sizes().equals(want)) {
    return absl::InvalidArgumentError(
        absl::StrCat("ScatterPages: kv must be (n_layer, 2, n_head, ",
                     n * page_size, ", head_dim) to fill ", n, " pages"));
  }
  // (L, 2, H, n*ps, D) -> (L, 2, H, n, ps, D) -> (n, L, 2, H, ps, D)
  torch::Tensor src = kv.reshape({want[0], 2, want[2], n, page_size, want[4]})
                          .permute({3, 0, 1, 2, 4, 5})
                          .to(storage.device(), storage.scalar_type())
                          .contiguous();
  storage.index_copy_(0, *index, src);
  return absl::OkStatus();
}

}  // namespace nanoserve
