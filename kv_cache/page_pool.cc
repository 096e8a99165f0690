#include "kv_cache/page_pool.h"

#include <algorithm>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"

namespace nanoserve {

absl::StatusOr<std::unique_ptr<PagePool>> PagePool::Create(const PagePoolOptions& options) {
  if (absl::Status s = options.layout.Validate(); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("PagePool: ", s.message()));
  }
  const int64_t page_bytes = options.layout.bytes_per_page();
  const int64_t num_pages = options.byte_budget > 0 ? options.byte_budget / page_bytes : 0;
  if (num_pages < 1) {
    return absl::InvalidArgumentError(absl::StrCat("PagePool: byte_budget ", options.byte_budget,
                                                   " is less than one page of ", page_bytes,
                                                   " bytes"));
  }
  if (num_pages > std::numeric_limits<int32_t>::max()) {
    return absl::InvalidArgumentError(
        absl::StrCat("PagePool: ", num_pages, " pages do not fit 32-bit page indices"));
  }
  if (options.exported) {
    absl::StatusOr<ExportedTensor> exported = AllocateExported(
        options.layout.shape(num_pages), options.layout.dtype, options.device, options.epoch);
    if (!exported.ok()) return exported.status();
    // Zeros already (see below).
    return std::unique_ptr<PagePool>(
        new PagePool(options, std::move(exported->tensor), std::move(exported->segment)));
  }
  absl::StatusOr<torch::Tensor> storage = EmptyPages(options.layout, num_pages, options.device);
  if (!storage.ok()) {
    return absl::ResourceExhaustedError(
        absl::StrCat("PagePool: cannot allocate ", num_pages * page_bytes, " bytes on ",
                     options.device.str(), ": ", storage.status().message()));
  }
  // Zeros, not garbage: attention over a padded block table reads pages no
  // sequence wrote, and masked weights times NaN would still be NaN.
  storage->zero_();
  return std::unique_ptr<PagePool>(new PagePool(options, *std::move(storage), SharedSegment{}));
}

PagePool::PagePool(const PagePoolOptions& options, torch::Tensor storage, SharedSegment segment)
    : options_(options),
      storage_(std::move(storage)),
      segment_(std::move(segment)),
      is_free_(static_cast<size_t>(storage_.size(0)), 1) {
  const int32_t n = static_cast<int32_t>(storage_.size(0));
  free_list_.reserve(n);
  for (int32_t page = n - 1; page >= 0; --page) free_list_.push_back(page);
}

absl::StatusOr<std::vector<int32_t>> PagePool::Allocate(int64_t n) {
  if (n < 0) {
    return absl::InvalidArgumentError(absl::StrCat("PagePool::Allocate: negative page count ", n));
  }
  if (n > num_free()) {
    return absl::ResourceExhaustedError(absl::StrCat("PagePool::Allocate: need ", n, " pages, ",
                                                     num_free(), " of ", num_pages(), " free"));
  }
  std::vector<int32_t> pages(free_list_.end() - n, free_list_.end());
  std::reverse(pages.begin(), pages.end());
  free_list_.resize(free_list_.size() - n);
  for (int32_t page : pages) is_free_[page] = 0;
  return pages;
}

absl::Status PagePool::Free(absl::Span<const int32_t> pages) {
  size_t checked = 0;
  absl::Status status;
  // Marks pages free as it validates, so a duplicate shows up as "already
  // free"; on error the marks are undone and nothing changes.
  for (; checked < pages.size(); ++checked) {
    const int32_t page = pages[checked];
    if (!is_valid(page)) {
      status = absl::InvalidArgumentError(
          absl::StrCat("PagePool::Free: page ", page, " out of range [0, ", num_pages(), ")"));
      break;
    }
    if (is_free_[page]) {
      status = absl::InvalidArgumentError(
          absl::StrCat("PagePool::Free: page ", page, " is already free or listed twice"));
      break;
    }
    is_free_[page] = 1;
  }
  if (!status.ok()) {
    for (size_t i = 0; i < checked; ++i) is_free_[pages[i]] = 0;
    return status;
  }
  // Pushed in reverse so that the next Allocate hands them out in order.
  for (auto it = pages.rbegin(); it != pages.rend(); ++it) {
    free_list_.push_back(*it);
  }
  return absl::OkStatus();
}

absl::Status PagePool::CheckInvariants() const {
  std::vector<uint8_t> seen(is_free_.size(), 0);
  for (int32_t page : free_list_) {
    if (!is_valid(page)) {
      return absl::InternalError(absl::StrCat("free list holds out-of-range page ", page));
    }
    if (seen[page]++) {
      return absl::InternalError(absl::StrCat("page ", page, " is on the free list twice"));
    }
    if (!is_free_[page]) {
      return absl::InternalError(
          absl::StrCat("page ", page, " is on the free list but marked allocated"));
    }
  }
  for (size_t page = 0; page < is_free_.size(); ++page) {
    if (is_free_[page] && !seen[page]) {
      return absl::InternalError(
          absl::StrCat("page ", page, " is marked free but not on the free list"));
    }
  }
  return absl::OkStatus();
}

}  // namespace nanoserve
