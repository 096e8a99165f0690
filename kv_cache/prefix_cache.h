// A prefix KV cache: a radix tree over token ids whose values are pages of a
// PagePool (Part C of the seed assignment, as production servers do it).
//
// A caller that wants to prefill `tokens`:
//   1. m = Match(tokens): the longest cached prefix, m.matched_tokens long,
//      whose K/V lie in pages m.pages (page i holds positions
//      [i*page_size, (i+1)*page_size)). The pages are pinned by lease
//      m.lease_id and stay unchanged until Release(m.lease_id).
//   2. AllocatePages(k) for the suffix; compute K/V of the new positions and
//      write them into those pages of storage() (ScatterPages).
//   3. Insert(full_pages_of(tokens), m.pages + new pages): the tree adopts the
//      new pages and returns its page list for the whole sequence, pinned
//      by a second lease. Release both leases when done reading.
//
// Page ownership. Every page of the pool is in exactly one of three states:
//   free           on the pool's free list;
//   cached         held by exactly one tree node (the tree owns it; its
//                  contents never change while it is cached);
//   caller-held    returned by AllocatePages and neither inserted nor freed
//                  yet; the caller owns it and must Insert or FreePages it.
// Only a caller-held page may be written. Cached pages are read-only; a
// cached page is evicted (back to free) only while no lease pins it.
//
// Invariants (CheckInvariants() verifies them):
//   * the page states above partition [0, num_pages);
//   * page alignment: the tree stores whole pages only; every node's token
//     run is a multiple of page_size and a match length is too;
//   * every active lease pins one tree node, and with it the path from the
//     root; pinned pages are never evicted;
//   * eviction takes the least recently used unpinned leaf first (a Match or
//     Insert makes its whole path most recent), from the leaf's tail, so the
//     cached set stays prefix closed.
//
// Cache namespaces (a "cache salt", per tenant): every Match and Insert
// names one, and a prefix cached in one namespace is never matched in
// another, so neither prefix hits nor their timing cross tenants. ""
// is the shared default. The namespaces share the pool, the LRU order and
// eviction. Callers bound the salt's length (ValidateCacheSalt); the cache
// takes any string.
//
// Leases. Lease ids are 64 random bits from the operating system's CSPRNG
// (getrandom), so that one holder cannot guess another's (nor, in practice,
// is an id handed out twice); kNoLease (0) means "no lease" and comes back
// when nothing is pinned (a zero-length match or insert). A lease belongs to
// identities (strings, e.g. a peer's certificate name): the caller that
// took it, and the holder it was taken for (Insert's `holder`; by default
// the caller). Release, RenewLease and LeasedPages by any other identity
// fail with NOT_FOUND, as for an unknown id, so they reveal nothing. Without
// authentication every caller is "" and the id alone is the capability. A
// holder that may die (a remote client) should be given a lease_ttl:
// leases not renewed within it are released by ReapExpiredLeases(), which
// the owner calls periodically.
//
// Thread safety: thread-safe; every method takes one internal mutex, so calls
// are linearizable. storage() may be read and written without the lock,
// under the ownership rules above.
#ifndef NANOSERVE_KV_CACHE_PREFIX_CACHE_H_
#define NANOSERVE_KV_CACHE_PREFIX_CACHE_H_

#include <torch/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "kv_cache/page_index.h"
#include "kv_cache/page_pool.h"
#include "kv_cache/radix_tree.h"

namespace nanoserve {

struct PrefixCacheOptions {
  // Geometry, dtype, device and byte budget of the page pool; its page_size
  // is the cache's unit of storage and matching.
  PagePoolOptions pool;
  // A lease not created or renewed within this long is released by
  // ReapExpiredLeases(). InfiniteDuration(): leases never expire.
  absl::Duration lease_ttl = absl::InfiniteDuration();
};

// The longest cache salt (namespace name) services accept, in bytes.
inline constexpr int64_t kMaxCacheSaltBytes = 256;

// INVALID_ARGUMENT if `cache_salt` is longer than kMaxCacheSaltBytes.
absl::Status ValidateCacheSalt(absl::string_view cache_salt);

struct PrefixCacheStats {
  int64_t lookups = 0;          // Match calls
  int64_t lookup_tokens = 0;    // tokens passed to Match, summed
  int64_t hit_tokens = 0;       // matched_tokens returned by Match, summed
  int64_t inserted_tokens = 0;  // tokens newly added to the tree by Insert
  int64_t evicted_pages = 0;    // cached pages returned to the free list
  int64_t expired_leases = 0;   // leases released by ReapExpiredLeases
  int64_t pages_total = 0;      // pool size
  int64_t pages_free = 0;       // on the free list
  int64_t pages_in_use = 0;     // cached + caller-held
  int64_t pages_cached = 0;     // held by the tree
  int64_t pages_pinned = 0;     // cached and pinned by a lease
  int64_t nodes = 0;            // tree nodes, excluding the roots
  int64_t namespaces = 0;       // cache namespaces holding pages
  int64_t active_leases = 0;
};

// One root-to-leaf path of the tree, for debugging and tests.
struct CachedPath {
  std::string cache_salt;       // its namespace
  std::vector<int32_t> tokens;  // a multiple of page_size long
  std::vector<int32_t> pages;   // tokens.size() / page_size
};

class PrefixCache {
 public:
  static constexpr uint64_t kNoLease = 0;

  struct MatchResult {
    int64_t matched_tokens = 0;  // a multiple of page_size
    std::vector<int32_t> pages;  // matched_tokens / page_size pages
    uint64_t lease_id = kNoLease;
  };

  struct InsertResult {
    uint64_t lease_id = kNoLease;
    int64_t inserted_tokens = 0;  // tokens that were not cached before
    std::vector<int32_t> pages;   // the tree's pages for the whole sequence
  };

  // Creates the pool (see PagePool::Create for errors) and an empty tree.
  static absl::StatusOr<std::unique_ptr<PrefixCache>> Create(const PrefixCacheOptions& options);

  PrefixCache(const PrefixCache&) = delete;
  PrefixCache& operator=(const PrefixCache&) = delete;

  int64_t page_size() const { return page_size_; }
  int64_t num_pages() const { return num_pages_; }
  const PrefixCacheOptions& options() const { return options_; }
  // The pool: (num_pages, n_layer, 2, n_head, page_size, head_dim).
  const torch::Tensor& storage() const { return storage_; }
  // How another process maps storage() (page_pool.h).
  const SharedSegment& segment() const { return segment_; }
  // The index of the cached pages (kv_cache/page_index.h) that peers map
  // beside an exported pool: a shared-memory segment of index_words()
  // 64-bit words, of the pool's epoch. transport kBytes (and 0 words) when
  // the pool is not exported or the index could not be had.
  const SharedSegment& index_segment() const { return index_segment_; }
  int64_t index_words() const;
  // The leading whole pages of `tokens` cached in namespace `cache_salt`, as
  // the index tells a peer (PageIndex::Find); -1 without an index.
  int64_t IndexedPages(absl::Span<const int32_t> tokens, absl::string_view cache_salt = "") const;

  // The longest prefix of `tokens` cached in namespace `cache_salt`, in
  // whole pages (a trailing partial page is never matched), pinned by a new
  // lease of `caller` if it is not empty (lease_id == kNoLease when
  // matched_tokens == 0). Marks the path most recently used and counts a
  // lookup. A caller that needs the logits of the last token should match
  // tokens minus the last one.
  MatchResult Match(absl::Span<const int32_t> tokens, absl::string_view cache_salt = "",
                    absl::string_view caller = "") ABSL_LOCKS_EXCLUDED(mu_);

  // Allocates `n` caller-held pages, evicting least recently used unpinned
  // cached pages as needed. All or nothing: RESOURCE_EXHAUSTED, evicting
  // nothing, if free plus evictable pages are fewer than n (everything else
  // pinned or caller-held). INVALID_ARGUMENT if n < 0.
  absl::StatusOr<std::vector<int32_t>> AllocatePages(int64_t n) ABSL_LOCKS_EXCLUDED(mu_);

  // Returns caller-held pages to the pool. All or nothing: INVALID_ARGUMENT,
  // and no change, if a page is out of range, free, cached, or listed twice.
  absl::Status FreePages(absl::Span<const int32_t> pages) ABSL_LOCKS_EXCLUDED(mu_);

  // Caches `tokens` in namespace `cache_salt` with their K/V in `pages`
  // (pages[i] holds positions [i*page_size, (i+1)*page_size)) and pins the
  // whole path with a new lease (kNoLease for empty tokens) that `caller`
  // and `holder` may use (empty holder: the caller alone). For the prefix
  // already cached in that namespace the tree keeps its own pages: a caller
  // page there that is the tree's own page at that position (e.g. from
  // Match) is left alone, any other is freed. The
  // remaining pages become cached. Returns the tree's pages for the whole
  // sequence. All or nothing: INVALID_ARGUMENT, and no change, if
  // tokens.size() is not a multiple of page_size, pages.size() !=
  // tokens.size() / page_size, a page is listed twice, or a page is neither
  // caller-held nor the tree's page for its position.
  absl::StatusOr<InsertResult> Insert(absl::Span<const int32_t> tokens,
                                      absl::Span<const int32_t> pages,
                                      absl::string_view cache_salt = "",
                                      absl::string_view caller = "", absl::string_view holder = "")
      ABSL_LOCKS_EXCLUDED(mu_);

  // Ends a lease; its pages become evictable once no other lease pins them.
  // NOT_FOUND, and no change, for an unknown (or already released or
  // expired) id or one `caller` may not use; kNoLease is accepted and does
  // nothing.
  absl::Status Release(uint64_t lease_id, absl::string_view caller = "") ABSL_LOCKS_EXCLUDED(mu_);

  // The tree's pages of the path a lease pins, in order (page i holds
  // positions [i*page_size, (i+1)*page_size)). They stay unchanged while the
  // lease lives. NOT_FOUND for an unknown id, kNoLease, or a lease `caller`
  // may not use.
  absl::StatusOr<std::vector<int32_t>> LeasedPages(uint64_t lease_id,
                                                   absl::string_view caller = "") const
      ABSL_LOCKS_EXCLUDED(mu_);

  // A second lease, of `caller` and `holder` (empty: the caller alone), on
  // the path lease `lease_id` pins, with that path's pages: the path stays
  // pinned until both leases are released. NOT_FOUND as LeasedPages.
  absl::StatusOr<MatchResult> ShareLease(uint64_t lease_id, absl::string_view caller = "",
                                         absl::string_view holder = "") ABSL_LOCKS_EXCLUDED(mu_);

  // Restarts a lease's time to live at `now`. NOT_FOUND for an unknown id or
  // a lease `caller` may not use.
  absl::Status RenewLease(uint64_t lease_id, absl::string_view caller = "",
                          absl::Time now = absl::Now()) ABSL_LOCKS_EXCLUDED(mu_);

  // Releases every lease last created or renewed more than lease_ttl before
  // `now`; returns how many. Does nothing with an infinite lease_ttl.
  int64_t ReapExpiredLeases(absl::Time now = absl::Now()) ABSL_LOCKS_EXCLUDED(mu_);

  // Evicts up to `n_pages` unpinned cached pages in LRU order; returns how
  // many it freed. EvictAll() evicts everything unpinned.
  int64_t Evict(int64_t n_pages) ABSL_LOCKS_EXCLUDED(mu_);
  int64_t EvictAll() ABSL_LOCKS_EXCLUDED(mu_);

  PrefixCacheStats Stats() const ABSL_LOCKS_EXCLUDED(mu_);

  // Every root-to-leaf path with its pages, least recently used first (by
  // the last Match or Insert that reached its leaf). O(tree size); for
  // snapshots (kv_cache/snapshot.h), debugging and tests.
  std::vector<CachedPath> DumpPaths() const ABSL_LOCKS_EXCLUDED(mu_);

  // Verifies the invariants in the file comment, the tree's and the pool's;
  // returns INTERNAL describing the first violation.
  absl::Status CheckInvariants() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  using Tree = RadixTree<int32_t>;

  struct Lease {
    Tree::Node* node;    // the pinned path ends here
    absl::Time renewed;  // created or last renewed
    std::string caller;  // who took it
    std::string holder;  // who it was taken for (may equal caller)
  };

  // `index`: the page index's memory (an undefined tensor: none).
  PrefixCache(const PrefixCacheOptions& options, std::unique_ptr<PagePool> pool,
              const ExportedTensor& index);
  uint64_t* IndexWords() const;

  // Creates a lease pinning `node` for `caller` and `holder` (empty: the
  // caller), or returns kNoLease for a null node (nothing to pin).
  uint64_t NewLeaseLocked(Tree::Node* node, absl::string_view caller, absl::string_view holder)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The lease `lease_id` if `caller` may use it, else null.
  const Lease* FindLeaseLocked(uint64_t lease_id, absl::string_view caller) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  int64_t EvictLocked(int64_t n_pages) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status CheckPagesLocked(absl::Span<const int32_t> pages,
                                absl::Span<const int32_t> tree_pages) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const PrefixCacheOptions options_;
  const int64_t page_size_;
  const int64_t num_pages_;
  const torch::Tensor storage_;  // the pool's storage, shared
  const SharedSegment segment_;
  const torch::Tensor index_storage_;  // int64 words of the page index, or undefined
  const SharedSegment index_segment_;

  mutable absl::Mutex mu_;
  const std::unique_ptr<PagePool> pool_ ABSL_PT_GUARDED_BY(mu_);
  Tree tree_ ABSL_GUARDED_BY(mu_);
  std::vector<uint8_t> cached_ ABSL_GUARDED_BY(mu_);  // per page: in tree
  // The index's writer.
  std::unique_ptr<PageIndex> index_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<uint64_t, Lease> leases_ ABSL_GUARDED_BY(mu_);
  PrefixCacheStats counters_ ABSL_GUARDED_BY(mu_);  // the cumulative fields
};

}  // namespace nanoserve

#endif  // NANOSERVE_KV_CACHE_PREFIX_CACHE_H_
