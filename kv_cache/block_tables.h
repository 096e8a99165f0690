// Block tables: which pages of a PrefixCache's pool hold the K/V of each
// sequence of a batch (vLLM's paged attention, SGLang's radix cache).
//
// Row r's positions [i * page_size, (i + 1) * page_size) live in page
// pages(r)[i] of pool().storage(); length(r) of them are cached. The pool is
// the only home of K/V: the tree's pages and the rows' pages are the same
// pages. A row's pages are, in order,
//   shared  the tree's cached pages (read-only), pinned by leases the row
//           holds: a prefix hit is read in place, never copied;
//   own     caller-held pages of the pool that this object allocated for
//           the row and frees when the row is reset.
// Writes go through PrepareWrite, which allocates own pages as a row grows
// (evicting the pool's least recently used unpinned cached pages) and copies
// a shared page before a position in it is written (copy on write), so a
// cached page never changes.
//
// A row with nothing to hold can be parked (Park): its table is one
// scratch page that belongs to no sequence, so that a step that runs idle
// rows along with busy ones (a CUDA graph of a fixed batch size) writes their
// dummy K/V there, and tables are padded with it.
//
// Invariants (CheckInvariants):
//   * length(r) <= pages(r).size() * page_size <= rounded-up capacity;
//   * a row's shared pages come first: pages(r)[0, shared_pages(r));
//   * every own page is held by exactly one row and is caller-held in the
//     pool; the rows' leases are live.
//
// Thread safety: thread-compatible (one owner, e.g. a scheduler thread). The
// pool is thread-safe and may be shared with other owners and a store.
#ifndef NANOSERVE_KV_CACHE_BLOCK_TABLES_H_
#define NANOSERVE_KV_CACHE_BLOCK_TABLES_H_

#include <cstdint>
#include <memory>
#include <vector>

#include <torch/types.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kv_cache/page_layout.h"
#include "kv_cache/prefix_cache.h"

namespace nanoserve {

class BlockTables {
 public:
  // `rows` empty rows of up to `capacity` tokens over `pool` (not owned; it
  // outlives this), which gives one page for scratch. INVALID_ARGUMENT for
  // rows or capacity < 1, the pool's error (RESOURCE_EXHAUSTED) if it has
  // no page to spare.
  static absl::StatusOr<std::unique_ptr<BlockTables>> Create(PrefixCache* pool, int64_t rows,
                                                             int64_t capacity);
  // Resets every row and gives the scratch page back.
  ~BlockTables();
  BlockTables(const BlockTables&) = delete;
  BlockTables& operator=(const BlockTables&) = delete;

  PrefixCache& pool() const { return *pool_; }
  // (num_pages, n_layer, 2, n_head, page_size, head_dim).
  const torch::Tensor& storage() const { return pool_->storage(); }
  int64_t page_size() const { return page_size_; }
  int64_t rows() const { return static_cast<int64_t>(rows_.size()); }
  int64_t capacity() const { return capacity_; }
  // Pages a row of `capacity` tokens needs.
  int64_t max_pages() const { return PageRun::PagesFor(capacity_, page_size_); }

  int64_t length(int64_t row) const { return lengths_[row]; }
  const std::vector<int64_t>& lengths() const { return lengths_; }
  const std::vector<int32_t>& pages(int64_t row) const { return rows_[row].pages; }
  // A row's pages and length as a run (a view: valid until the row changes).
  PageRun run(int64_t row) const;
  int64_t shared_pages(int64_t row) const { return rows_[row].shared; }
  // Own pages over all rows.
  int64_t own_pages() const;

  // Sets a row's cached length. REQUIRES: 0 <= n <= the tokens its pages
  // cover (PrepareWrite or Attach first).
  void set_length(int64_t row, int64_t n);

  // Empties a row: releases its leases and frees its own pages.
  void Reset(int64_t row);
  // Empties a row and points it at the scratch page: writes at position 0
  // land there (length stays 0).
  void Park(int64_t row);
  bool parked(int64_t row) const { return rows_[row].parked; }
  int32_t scratch_page() const { return scratch_; }

  // Row `row` (empty) reads positions [0, tokens) from the tree pages that
  // lease `lease_id` of the pool pins, in place: the row takes a lease of
  // its own on them (the caller keeps and releases `lease_id`), and its
  // length becomes `tokens`. INVALID_ARGUMENT if the row is not empty or
  // `tokens` is not whole pages of the leased path, or over the capacity;
  // NOT_FOUND for an unknown lease.
  absl::Status AttachLease(int64_t row, uint64_t lease_id, int64_t tokens);

  // Makes positions [begin, end) of a row writable: pages up to `end` are
  // allocated as own pages, and a shared page among [begin, end) is first
  // copied into a new own page (copy on write; the tree's page is left as
  // it was, and the row's leases stay until Reset). Pages before `begin`
  // are untouched. RESOURCE_EXHAUSTED if the pool has too few free or
  // evictable pages (pages allocated so far stay the row's); INVALID_ARGUMENT
  // if end > capacity or begin > end.
  absl::Status PrepareWrite(int64_t row, int64_t begin, int64_t end);

  // After the pool's Insert adopted the row's first tree_pages.size() pages
  // (giving back `tree_pages` and a lease): the row reads those tree pages
  // from now on, pinned by `lease_id` (taken over; released by Reset). The
  // row's own pages in that range were adopted or freed by the Insert.
  // REQUIRES: tree_pages.size() * page_size <= the tokens its pages cover.
  void AdoptInserted(int64_t row, absl::Span<const int32_t> tree_pages, uint64_t lease_id);

  // Writes K/V of positions [begin, begin + T) of a row from `kv`:
  // (n_layer, 2, n_head, T, head_dim), any device and dtype (converted),
  // after PrepareWrite. The row's length is the caller's to set.
  absl::Status WriteTokens(int64_t row, int64_t begin, const torch::Tensor& kv);
  // Positions [0, n * page_size) of an empty row become copies of the n
  // pages `from_pages` of `from`, another pool of this page shape (e.g. the
  // KV store's, mapped here; any dtype and device): page to page, with no
  // staging run. The row's length becomes n * page_size. INVALID_ARGUMENT
  // for a row that is not empty, pages of another shape or a bad page id;
  // PrepareWrite's errors.
  absl::Status CopyPagesIn(int64_t row, const torch::Tensor& from,
                           absl::Span<const int32_t> from_pages);
  // K/V of positions [begin, end) of a row, end <= length:
  // (n_layer, 2, n_head, end - begin, head_dim), a new tensor on the pool's
  // device.
  absl::StatusOr<torch::Tensor> ReadTokens(int64_t row, int64_t begin, int64_t end) const;

  // (rows, width) int32 on the CPU: each row's pages, padded with the
  // scratch page (readers mask by length; writes past a row's pages land
  // in scratch).
  torch::Tensor TableTensor(int64_t rows, int64_t width) const;

  // Verifies the invariants above; INTERNAL describing the first violation.
  absl::Status CheckInvariants() const;

 private:
  BlockTables(PrefixCache* pool, int64_t rows, int64_t capacity, int32_t scratch);

  struct Row {
    std::vector<int32_t> pages;
    int64_t shared = 0;            // pages[0, shared) are the tree's
    std::vector<uint64_t> leases;  // pin the shared pages
    bool parked = false;           // pages == {scratch}, owned by no one
  };

  // Frees a row's own pages from index `from` on and drops them from its
  // table.
  void FreeOwnFrom(Row& row, int64_t from);

  PrefixCache* pool_;
  const int64_t page_size_;
  const int64_t capacity_;
  int32_t scratch_ = -1;
  std::vector<Row> rows_;
  std::vector<int64_t> lengths_;
};

}  // namespace nanoserve

#endif  // NANOSERVE_KV_CACHE_BLOCK_TABLES_H_
