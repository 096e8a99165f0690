#include "kv_store/page_layout.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "kv_store/torch_status.h"

namespace nanoserve {
namespace {

using torch::indexing::Slice;

constexpr int64_t kMaxDim = 65536;
// Four sizes of up to kMaxDim would overflow int64 bytes; 1 TiB is absurd.
constexpr int64_t kMaxPageBytes = int64_t{1} << 40;

absl::Status CheckPages(const torch::Tensor& pages) {
  if (pages.dim() != 6 || pages.size(2) != 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        "pages must be (n, n_layer, 2, n_head, page_size, head_dim); got ", pages.dim(), "-D"));
  }
  return absl::OkStatus();
}

absl::Status CheckIndices(absl::Span<const int32_t> pages, int64_t num_pages, bool unique) {
  for (int32_t page : pages) {
    if (page < 0 || page >= num_pages) {
      return absl::InvalidArgumentError(
          absl::StrCat("page ", page, " out of range [0, ", num_pages, ")"));
    }
  }
  if (unique) {
    std::vector<int32_t> sorted(pages.begin(), pages.end());
    std::sort(sorted.begin(), sorted.end());
    if (std::adjacent_find(sorted.begin(), sorted.end()) != sorted.end()) {
      return absl::InvalidArgumentError("a page is listed twice");
    }
  }
  return absl::OkStatus();
}

torch::Tensor IndexTensor(absl::Span<const int32_t> pages, torch::Device device) {
  return torch::tensor(std::vector<int64_t>(pages.begin(), pages.end()), torch::kLong).to(device);
}

// Per token of the runs: row, position, page and offset, each (N,) int64 on
// the rows' device.
struct TokenIndex {
  torch::Tensor row, position, page, offset;
  int64_t size = 0;
};

absl::StatusOr<TokenIndex> IndexRuns(absl::Span<const PageRun> runs, const torch::Tensor& pages,
                                     const RowsKv& rows, bool unique_pages) {
  if (absl::Status s = CheckPages(pages); !s.ok()) return s;
  if (rows.k.empty() || rows.k.size() != rows.v.size()) {
    return absl::InvalidArgumentError("rows: K and V of every layer are needed");
  }
  const torch::Tensor& k0 = rows.k[0];
  if (static_cast<int64_t>(rows.k.size()) != pages.size(1) || k0.dim() != 4 ||
      k0.size(1) != pages.size(3) || k0.size(3) != pages.size(5)) {
    return absl::InvalidArgumentError(absl::StrCat("rows of ", rows.k.size(), " layers x ",
                                                   c10::str(k0.sizes()), " do not fit pages ",
                                                   c10::str(pages.sizes())));
  }
  const int64_t page_size = pages.size(4), batch = k0.size(0), capacity = k0.size(2);
  std::vector<int64_t> row, position, page, offset;
  std::vector<int32_t> all_pages;
  for (const PageRun& run : runs) {
    const int64_t end = run.begin + static_cast<int64_t>(run.pages.size()) * page_size;
    if (run.row < 0 || run.row >= batch || run.begin < 0 || end > capacity) {
      return absl::InvalidArgumentError(absl::StrCat("run of row ", run.row, " positions [",
                                                     run.begin, ", ", end, ") outside ", batch,
                                                     " rows of ", capacity));
    }
    all_pages.insert(all_pages.end(), run.pages.begin(), run.pages.end());
    for (size_t i = 0; i < run.pages.size(); ++i) {
      for (int64_t j = 0; j < page_size; ++j) {
        row.push_back(run.row);
        position.push_back(run.begin + static_cast<int64_t>(i) * page_size + j);
        page.push_back(run.pages[i]);
        offset.push_back(j);
      }
    }
  }
  if (absl::Status s = CheckIndices(all_pages, pages.size(0), unique_pages); !s.ok()) return s;
  auto on_device = [&](const std::vector<int64_t>& v) {
    return torch::tensor(v, torch::kLong).to(k0.device());
  };
  return TorchResult("page index", [&] {
    return TokenIndex{on_device(row), on_device(position), on_device(page), on_device(offset),
                      static_cast<int64_t>(row.size())};
  });
}

}  // namespace

int64_t PageLayout::bytes_per_page() const {
  return n_layer * 2 * n_head * page_size * head_dim *
         static_cast<int64_t>(c10::elementSize(dtype));
}

std::vector<int64_t> PageLayout::shape(int64_t n_pages) const {
  return {n_pages, n_layer, 2, n_head, page_size, head_dim};
}

absl::Status PageLayout::Validate() const {
  for (int64_t v : {n_layer, n_head, head_dim, page_size}) {
    if (v < 1 || v > kMaxDim) {
      return absl::InvalidArgumentError(absl::StrCat("bad KV page layout ", ToString()));
    }
  }
  // bytes_per_page() in 128 bits: at most 2^(4 * 16 + 1 + 3).
  const __int128 page_bytes = static_cast<__int128>(n_layer) * 2 * n_head * page_size * head_dim *
                              static_cast<int64_t>(c10::elementSize(dtype));
  if (page_bytes > kMaxPageBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("KV page layout ", ToString(), " has pages over ", kMaxPageBytes, " bytes"));
  }
  return absl::OkStatus();
}

std::string PageLayout::ToString() const {
  return absl::StrFormat("{%s, n_layer %d, n_head %d, head_dim %d, page_size %d}",
                         c10::toString(dtype), n_layer, n_head, head_dim, page_size);
}

absl::StatusOr<torch::Tensor> EmptyPages(const PageLayout& layout, int64_t n_pages,
                                         torch::Device device) {
  if (absl::Status s = layout.Validate(); !s.ok()) return s;
  absl::StatusOr<torch::Tensor> pages = TorchResult("allocating KV pages", [&] {
    return torch::empty(layout.shape(n_pages),
                        torch::TensorOptions().dtype(layout.dtype).device(device));
  });
  if (!pages.ok() && pages.status().code() == absl::StatusCode::kInternal) {
    // An allocation that fails is out of memory, whatever LibTorch calls it.
    return absl::ResourceExhaustedError(pages.status().message());
  }
  return pages;
}

absl::Status LoadRuns(const torch::Tensor& pages, absl::Span<const PageRun> runs,
                      const RowsKv& rows) {
  absl::StatusOr<TokenIndex> index = IndexRuns(runs, pages, rows, /*unique_pages=*/false);
  if (!index.ok()) return index.status();
  return RunTorch("loading KV pages into rows", [&] {
    // Layer by layer: the gathered copy is one layer's (N, 2, H, D).
    for (size_t l = 0; index->size > 0 && l < rows.k.size(); ++l) {
      torch::Tensor kv = pages.select(1, static_cast<int64_t>(l))
                             .index({index->page.to(pages.device()), Slice(), Slice(),
                                     index->offset.to(pages.device())})
                             .to(rows.k[l].device(), rows.k[l].scalar_type());
      torch::Tensor k = rows.k[l], v = rows.v[l];
      k.index_put_({index->row, Slice(), index->position}, kv.select(1, 0));
      v.index_put_({index->row, Slice(), index->position}, kv.select(1, 1));
    }
  });
}

absl::Status StoreRuns(const RowsKv& rows, absl::Span<const PageRun> runs,
                       const torch::Tensor& pages) {
  absl::StatusOr<TokenIndex> index = IndexRuns(runs, pages, rows, /*unique_pages=*/true);
  if (!index.ok()) return index.status();
  if (index->size == 0) return absl::OkStatus();
  return RunTorch("storing KV rows into pages", [&] {
    std::vector<torch::Tensor> layers;
    for (size_t l = 0; l < rows.k.size(); ++l) {
      layers.push_back(torch::stack({rows.k[l].index({index->row, Slice(), index->position}),
                                     rows.v[l].index({index->row, Slice(), index->position})},
                                    1));  // (N, 2, H, D)
    }
    torch::Tensor kv = torch::stack(layers, 1).to(pages.device(), pages.scalar_type());
    torch::Tensor out = pages;  // (N, L, 2, H, D) into (n, L, 2, H, P, D)
    out.index_put_({index->page.to(pages.device()), Slice(), Slice(), Slice(),
                    index->offset.to(pages.device())},
                   kv);
  });
}

absl::StatusOr<torch::Tensor> StageRowPages(const RowsKv& rows, const PageLayout& layout,
                                            int64_t row, int64_t begin, int64_t n_pages,
                                            torch::Device device) {
  absl::StatusOr<torch::Tensor> staged = EmptyPages(layout, n_pages, device);
  if (!staged.ok()) return staged.status();
  PageRun run{row, begin, {}};
  for (int32_t i = 0; i < n_pages; ++i) run.pages.push_back(i);
  if (absl::Status s = StoreRuns(rows, {run}, *staged); !s.ok()) return s;
  return staged;
}

absl::StatusOr<torch::Tensor> ReadPages(const torch::Tensor& pool, absl::Span<const int32_t> pages,
                                        torch::Device device) {
  if (absl::Status s = CheckPages(pool); !s.ok()) return s;
  if (absl::Status s = CheckIndices(pages, pool.size(0), false); !s.ok()) return s;
  return TorchResult("reading KV pages", [&] {
    return pool.index_select(0, IndexTensor(pages, pool.device())).to(device).contiguous();
  });
}

absl::Status WritePages(const torch::Tensor& pool, absl::Span<const int32_t> pages,
                        const torch::Tensor& staged) {
  if (absl::Status s = CheckPages(pool); !s.ok()) return s;
  if (absl::Status s = CheckIndices(pages, pool.size(0), true); !s.ok()) return s;
  std::vector<int64_t> want = pool.sizes().vec();
  want[0] = static_cast<int64_t>(pages.size());
  if (!staged.sizes().equals(want)) {
    return absl::InvalidArgumentError(
        absl::StrCat("pages of shape ", c10::str(staged.sizes()), " do not fit ", c10::str(want)));
  }
  return RunTorch("writing KV pages", [&] {
    torch::Tensor out = pool;
    out.index_copy_(0, IndexTensor(pages, pool.device()),
                    staged.to(pool.device(), pool.scalar_type()));
  });
}

absl::StatusOr<torch::Tensor> PagesFromBytes(const PageLayout& layout, absl::string_view bytes) {
  if (absl::Status s = layout.Validate(); !s.ok()) return s;
  const int64_t per_page = layout.bytes_per_page();
  const int64_t size = static_cast<int64_t>(bytes.size());
  if (per_page <= 0 || size % per_page != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(size, " bytes is not a whole number of ", per_page, "-byte pages"));
  }
  absl::StatusOr<torch::Tensor> pages = EmptyPages(layout, size / per_page, torch::kCPU);
  if (pages.ok() && size > 0) std::memcpy(pages->data_ptr(), bytes.data(), bytes.size());
  return pages;
}

void CopyPoolBytes(const torch::Tensor& pool, const PageLayout& layout,
                   absl::Span<const int32_t> pages, int64_t offset, int64_t size, char* out) {
  const char* base = static_cast<const char*>(pool.data_ptr());
  const int64_t per_page = layout.bytes_per_page();
  for (int64_t done = 0; done < size;) {  // the range may span pages
    const int64_t at = offset + done;
    const int64_t page = at / per_page, within = at % per_page;
    const int64_t len = std::min(size - done, per_page - within);
    std::memcpy(out + done, base + pages[page] * per_page + within, len);
    done += len;
  }
}

}  // namespace nanoserve
