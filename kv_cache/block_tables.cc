#include "kv_cache/block_tables.h"

#include <algorithm>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"

namespace nanoserve {

absl::StatusOr<std::unique_ptr<BlockTables>> BlockTables::Create(PrefixCache* pool, int64_t rows,
                                                                 int64_t capacity) {
  if (rows < 1) return absl::InvalidArgumentError(absl::StrCat("block tables of ", rows, " rows"));
  if (capacity < 1) {
    return absl::InvalidArgumentError(absl::StrCat("block tables of capacity ", capacity));
  }
  absl::StatusOr<std::vector<int32_t>> scratch = pool->AllocatePages(1);
  if (!scratch.ok()) {
    return absl::Status(
        scratch.status().code(),
        absl::StrCat("no scratch page for the block tables: ", scratch.status().message()));
  }
  return std::unique_ptr<BlockTables>(new BlockTables(pool, rows, capacity, scratch->front()));
}

BlockTables::BlockTables(PrefixCache* pool, int64_t rows, int64_t capacity, int32_t scratch)
    : pool_(pool),
      page_size_(pool->page_size()),
      capacity_(capacity),
      scratch_(scratch),
      rows_(rows),
      lengths_(rows, 0) {}

BlockTables::~BlockTables() {
  for (int64_t r = 0; r < rows(); ++r) Reset(r);
  pool_->FreePages({scratch_}).IgnoreError();
}

int64_t BlockTables::own_pages() const {
  int64_t n = 0;
  for (const Row& row : rows_) {
    if (!row.parked) n += static_cast<int64_t>(row.pages.size()) - row.shared;
  }
  return n;
}

PageRun BlockTables::run(int64_t row) const {
  return PageRun(rows_[row].pages, page_size_, lengths_[row]);
}

void BlockTables::set_length(int64_t row, int64_t n) {
  TORCH_CHECK(run(row).Fits(0, n), "BlockTables: length ", n, " of row ", row, " beyond its ",
              rows_[row].pages.size(), " pages");
  lengths_[row] = n;
}

void BlockTables::FreeOwnFrom(Row& row, int64_t from) {
  from = std::max(from, row.shared);
  if (from >= static_cast<int64_t>(row.pages.size())) return;
  const std::vector<int32_t> own(row.pages.begin() + from, row.pages.end());
  // Own pages are caller-held by construction; a failure here is a bug.
  const absl::Status freed = pool_->FreePages(own);
  TORCH_CHECK(freed.ok(), "BlockTables: ", freed.ToString());
  row.pages.resize(from);
}

void BlockTables::Reset(int64_t row) {
  Row& r = rows_[row];
  if (r.parked) r.pages.clear();
  FreeOwnFrom(r, r.shared);
  for (uint64_t lease : r.leases) pool_->Release(lease).IgnoreError();
  r = Row();
  lengths_[row] = 0;
}

void BlockTables::Park(int64_t row) {
  Reset(row);
  rows_[row].pages = {scratch_};
  rows_[row].parked = true;
}

absl::Status BlockTables::AttachLease(int64_t row, uint64_t lease_id, int64_t tokens) {
  Row& r = rows_[row];
  if (r.parked) Reset(row);
  if (!r.pages.empty() || lengths_[row] != 0) {
    return absl::InvalidArgumentError(absl::StrCat("AttachLease: row ", row, " is not empty"));
  }
  if (tokens == 0) return absl::OkStatus();
  if (tokens < 0 || tokens % page_size_ != 0 || tokens > capacity_) {
    return absl::InvalidArgumentError(absl::StrCat("AttachLease: ", tokens,
                                                   " tokens are not whole pages of size ",
                                                   page_size_, " within ", capacity_));
  }
  absl::StatusOr<PrefixCache::MatchResult> shared = pool_->ShareLease(lease_id);
  if (!shared.ok()) return shared.status();
  if (shared->matched_tokens < tokens) {
    pool_->Release(shared->lease_id).IgnoreError();
    return absl::InvalidArgumentError(absl::StrCat("AttachLease: lease ", lease_id, " pins ",
                                                   shared->matched_tokens, " tokens, not ",
                                                   tokens));
  }
  r.pages.assign(shared->pages.begin(), shared->pages.begin() + tokens / page_size_);
  r.shared = static_cast<int64_t>(r.pages.size());
  r.leases.push_back(shared->lease_id);
  lengths_[row] = tokens;
  return absl::OkStatus();
}

absl::Status BlockTables::PrepareWrite(int64_t row, int64_t begin, int64_t end) {
  if (begin < 0 || begin > end || end > capacity_) {
    return absl::InvalidArgumentError(
        absl::StrCat("PrepareWrite: positions [", begin, ", ", end, ") of a row of ", capacity_));
  }
  Row& r = rows_[row];
  if (r.parked) {
    if (end <= page_size_) return absl::OkStatus();  // into scratch
    Reset(row);
  }
  const int64_t need = PageRun::PagesFor(end, page_size_);
  const int64_t have = static_cast<int64_t>(r.pages.size());
  // Copy on write: every shared page from the one holding `begin` on.
  const int64_t first_written = begin / page_size_;
  const int64_t copies = begin < end ? std::max<int64_t>(0, r.shared - first_written) : 0;
  const int64_t fresh = std::max<int64_t>(0, need - have);
  if (copies + fresh == 0) return absl::OkStatus();
  absl::StatusOr<std::vector<int32_t>> got = pool_->AllocatePages(copies + fresh);
  if (!got.ok()) return got.status();
  if (copies > 0) {
    const absl::Span<const int32_t> from(r.pages.data() + first_written, copies);
    const absl::Span<const int32_t> to(got->data(), copies);
    const absl::Status copied = CopyPages(storage(), from, storage(), to);
    std::copy(to.begin(), to.end(), r.pages.begin() + first_written);
    r.shared = first_written;
    if (!copied.ok()) return copied;
  }
  r.pages.insert(r.pages.end(), got->begin() + copies, got->end());
  return absl::OkStatus();
}

void BlockTables::AdoptInserted(int64_t row, absl::Span<const int32_t> tree_pages,
                                uint64_t lease_id) {
  Row& r = rows_[row];
  const int64_t n = static_cast<int64_t>(tree_pages.size());
  TORCH_CHECK(n <= static_cast<int64_t>(r.pages.size()), "AdoptInserted: ", n,
              " pages for a row of ", r.pages.size());
  std::copy(tree_pages.begin(), tree_pages.end(), r.pages.begin());
  r.shared = std::max(r.shared, n);
  if (lease_id != PrefixCache::kNoLease) r.leases.push_back(lease_id);
}

absl::Status BlockTables::WriteTokens(int64_t row, int64_t begin, const torch::Tensor& kv) {
  const PageLayout& layout = pool_->options().pool.layout;
  if (absl::Status s = PageRun::CheckTokens(kv, layout); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("WriteTokens: ", s.message()));
  }
  if (absl::Status s = PrepareWrite(row, begin, begin + kv.size(3)); !s.ok()) return s;
  return run(row).Write(storage(), begin, kv);
}

absl::Status BlockTables::CopyPagesIn(int64_t row, const torch::Tensor& from,
                                      absl::Span<const int32_t> from_pages) {
  if (lengths_[row] != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("CopyPagesIn: row ", row, " holds ", lengths_[row], " tokens already"));
  }
  const int64_t n = static_cast<int64_t>(from_pages.size());
  if (rows_[row].parked) Reset(row);  // a parked row's first page is scratch
  if (absl::Status s = PrepareWrite(row, 0, n * page_size_); !s.ok()) return s;
  absl::Status copied =
      CopyPages(from, from_pages, storage(), absl::MakeConstSpan(rows_[row].pages).first(n));
  if (!copied.ok()) {
    return absl::Status(copied.code(), absl::StrCat("CopyPagesIn: ", copied.message()));
  }
  set_length(row, n * page_size_);
  return absl::OkStatus();
}

absl::StatusOr<torch::Tensor> BlockTables::ReadTokens(int64_t row, int64_t begin,
                                                      int64_t end) const {
  absl::StatusOr<torch::Tensor> kv = run(row).Read(storage(), begin, end);
  if (kv.status().code() == absl::StatusCode::kInvalidArgument) {
    return absl::InvalidArgumentError(absl::StrCat("ReadTokens: ", kv.status().message()));
  }
  return kv;
}

torch::Tensor BlockTables::TableTensor(int64_t rows, int64_t width) const {
  torch::Tensor table = torch::full({rows, width}, scratch_, torch::kInt);
  int32_t* data = table.data_ptr<int32_t>();
  for (int64_t r = 0; r < rows; ++r) {
    const std::vector<int32_t>& pages = rows_[r].pages;
    TORCH_CHECK(static_cast<int64_t>(pages.size()) <= width, "TableTensor: row ", r, " has ",
                pages.size(), " pages, more than ", width);
    std::copy(pages.begin(), pages.end(), data + r * width);
  }
  return table;
}

absl::Status BlockTables::CheckInvariants() const {
  absl::flat_hash_set<int32_t> own;
  for (int64_t i = 0; i < rows(); ++i) {
    const Row& r = rows_[i];
    if (r.parked) {
      if (r.pages != std::vector<int32_t>{scratch_} || r.shared != 0 || !r.leases.empty() ||
          lengths_[i] != 0) {
        return absl::InternalError(absl::StrCat("row ", i, ": parked but holds pages"));
      }
      continue;
    }
    const int64_t n = static_cast<int64_t>(r.pages.size());
    if (lengths_[i] > n * page_size_ || n > max_pages()) {
      return absl::InternalError(absl::StrCat("row ", i, ": length ", lengths_[i], " and ", n,
                                              " pages (at most ", max_pages(), ")"));
    }
    if (r.shared > n) return absl::InternalError(absl::StrCat("row ", i, ": shared > pages"));
    for (int64_t p = r.shared; p < n; ++p) {
      if (r.pages[p] == scratch_ || !own.insert(r.pages[p]).second) {
        return absl::InternalError(absl::StrCat("page ", r.pages[p], " owned twice"));
      }
    }
    if (r.shared > 0 && r.leases.empty()) {
      return absl::InternalError(absl::StrCat("row ", i, ": shared pages but no lease"));
    }
    for (uint64_t lease : r.leases) {
      if (!pool_->LeasedPages(lease).ok()) {
        return absl::InternalError(absl::StrCat("row ", i, ": lease ", lease, " is gone"));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace nanoserve
