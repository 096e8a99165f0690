// The KV page layout, and every copy in or out of pages.
//
// A page holds the keys and values of `page_size` consecutive token positions
// for every layer and head. A run of n pages, wherever it lives, is one tensor
//
//   pages: (n, n_layer, 2, n_head, page_size, head_dim)      // 2 = K, V
//
// in the layout's dtype: every KV pool is such a tensor (n = its page
// count; the engine's sequences read and write theirs through block tables,
// kv_cache/block_tables.h), and so is a run of pages staged for the wire,
// where it is exactly its bytes in C order (page after page). A sequence's
// positions live in a PageRun: position p in page pages[p / page_size] at
// offset p % page_size; that arithmetic and the copies by position are
// written there only.
//
// Errors: INVALID_ARGUMENT for a tensor or page list that does not fit the
// layout (no data is changed then); LibTorch failures map as RunTorch says
// (base/torch_status.h). Thread safety: stateless; concurrent calls are
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

// to[to_pages[i]] = from[from_pages[i]] for each i: pages of one pool
// copied into another of the same page shape (any dtype, converted; any
// devices), page to page with no staging run: on the CPU a copy per page;
// on one GPU with one dtype one kernel (kv_cache/page_copy_cuda.h),
// enqueued on the current stream and not waited for; elsewhere one gather
// and one scatter. INVALID_ARGUMENT for pools of
// different page shapes, lists of different lengths, an index out of range
// or a destination page listed twice.
absl::Status CopyPages(const torch::Tensor& from, absl::Span<const int32_t> from_pages,
                       const torch::Tensor& to, absl::Span<const int32_t> to_pages);

// ---- a run of pages <-> K/V by position ----

// A run of pages (n, n_layer, 2, n_head, P, head_dim) as the K/V of its
// n * P positions in order: (n_layer, 2, n_head, n * P, head_dim), any page
// size. Throws c10::Error for a tensor that is not 6-D.
torch::Tensor PagesAsTokens(const torch::Tensor& pages);
// The inverse: K/V of T positions (n_layer, 2, n_head, T, head_dim) as a run
// of T / page_size contiguous pages. Throws c10::Error unless page_size
// divides T.
torch::Tensor TokensAsPages(const torch::Tensor& kv, int64_t page_size);

// ---- a sequence's positions over pages ----

// Positions [0, tokens) of a sequence laid out over pages of one pool:
// position p lives in page pages()[p / page_size] at offset p % page_size
// (a block table's row; a staged run is the run of its own pages 0..n-1,
// every position). It owns the token count, the fit checks and the
// per-position scatter and gather, for the block tables, the model, the
// scheduler and the decode stage alike. A view: `pages` outlives it.
class PageRun {
 public:
  // REQUIRES: page_size >= 1; 0 <= tokens <= pages.size() * page_size.
  PageRun(absl::Span<const int32_t> pages, int64_t page_size, int64_t tokens);

  // Pages that hold `tokens` positions: tokens / page_size rounded up.
  static int64_t PagesFor(int64_t tokens, int64_t page_size);
  // Positions a staged run (n, n_layer, 2, n_head, P, head_dim) holds: n * P.
  // REQUIRES: staged is 6-D.
  static int64_t StagedTokens(const torch::Tensor& staged);
  // INVALID_ARGUMENT unless `staged` is a run of pages of `layout`'s
  // n_layer, n_head and head_dim (any page size, dtype and device) of at
  // most max_tokens positions.
  static absl::Status CheckStaged(const torch::Tensor& staged, const PageLayout& layout,
                                  int64_t max_tokens);
  // INVALID_ARGUMENT unless `kv` is K/V by position of `layout`:
  // (n_layer, 2, n_head, T, head_dim), any T, dtype and device.
  static absl::Status CheckTokens(const torch::Tensor& kv, const PageLayout& layout);

  absl::Span<const int32_t> pages() const { return pages_; }
  int64_t page_size() const { return page_size_; }
  int64_t tokens() const { return tokens_; }
  // Positions its pages hold: pages().size() * page_size.
  int64_t room() const { return static_cast<int64_t>(pages_.size()) * page_size_; }
  // Whether positions [begin, end) lie within its pages.
  bool Fits(int64_t begin, int64_t end) const {
    return 0 <= begin && begin <= end && end <= room();
  }

  // Appends, for each position of [begin, end), its page and its offset in
  // the page (int64, as index tensors take them). REQUIRES: Fits(begin, end).
  void AppendPositions(int64_t begin, int64_t end, std::vector<int64_t>& pages,
                       std::vector<int64_t>& offsets) const;
  // Appends its first n pages, `pad` in place of those past its end.
  void AppendPages(int64_t n, int32_t pad, std::vector<int64_t>& out) const;

  // Scatter: writes K/V of positions [begin, begin + T) into its pages of
  // `pool` (n_pages, n_layer, 2, n_head, page_size, head_dim) from `kv`
  // (n_layer, 2, n_head, T, head_dim), any device and dtype (converted).
  // INVALID_ARGUMENT unless Fits(begin, begin + T).
  absl::Status Write(const torch::Tensor& pool, int64_t begin, const torch::Tensor& kv) const;
  // Gather: K/V of positions [begin, end) from its pages of `pool`:
  // (n_layer, 2, n_head, end - begin, head_dim), a new tensor on the pool's
  // device. INVALID_ARGUMENT unless 0 <= begin <= end <= tokens().
  absl::StatusOr<torch::Tensor> Read(const torch::Tensor& pool, int64_t begin, int64_t end) const;

 private:
  absl::Span<const int32_t> pages_;
  int64_t page_size_;
  int64_t tokens_;
};

// The scatter and gather by position over index tensors that PageRun's
// positions and pages fill, for a pool or a view of one whose first
// dimension is the page and whose last two are (page_size, head_dim), e.g.
// one layer's keys (num_pages, n_head, page_size, head_dim). Throw
// c10::Error on misuse, like the LibTorch ops they are (callers are inside
// a forward pass).
//
// pool[pages[i], ..., offsets[i], :] = values[i] for every index i of
// `pages` and `offsets` (int64 on the pool's device, one shape S): values
// are (S..., the pool's middle dimensions..., head_dim), in its dtype.
void ScatterPositions(const torch::Tensor& pool, const torch::Tensor& pages,
                      const torch::Tensor& offsets, const torch::Tensor& values);
// Positions [0, length) of R rows, row r read through its n pages
// table[r] (int64 (R, n) on the pool's device; length <= n * page_size):
// (R, the pool's middle dimensions..., length, head_dim).
torch::Tensor GatherPositions(const torch::Tensor& pool, const torch::Tensor& table,
                              int64_t length);

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
