// PrefixStore: what prefix prefill (engine/prefill.h) needs of a KV store,
// whether the store is a PrefixCache in this process (LocalPrefixStore,
// below) or the KV store service across the network (RemotePrefixStore in
// kv_store/client/).
//
// A caller that prefills a prompt:
//   1. MatchPrefix(tokens): the longest cached whole-page prefix, pinned by a
//      lease;
//   2. Load: the leased pages become the start of rows of its block tables
//      (kv_store/block_tables.h): read in place when the rows' pool is the
//      store's own (a LocalPrefixStore over that pool), else copied into
//      pages of the rows' pool;
//   3. computes the rest into its rows, then Store: caches the rows' whole
//      pages that the store lacks (the rows' own pages are adopted by the
//      tree in place, or copied to the store) and returns a lease on each
//      stored path;
//   4. Release every lease it got.
// A lease pins its pages: they are neither evicted nor changed while it
// lives. kNoLease (0) pins nothing.
//
// Namespaces: MatchPrefix and Store name a cache salt (prefix_cache.h):
// prefixes stored under one salt are matched only under the same salt; ""
// is the shared default.
//
// Errors: a store that cannot be reached, is overloaded or has another
// layout fails a call with its status; the caller decides whether to compute
// without it. Bad arguments (rows, runs) are INVALID_ARGUMENT.
//
// Thread safety: implementations are thread-safe.
#ifndef NANOSERVE_KV_CACHE_PREFIX_STORE_H_
#define NANOSERVE_KV_CACHE_PREFIX_STORE_H_

#include <cstdint>
#include <optional>
#include <vector>

#include <torch/types.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "kv_cache/block_tables.h"
#include "kv_cache/page_layout.h"
#include "kv_cache/prefix_cache.h"

namespace nanoserve {

class PrefixStore {
 public:
  static constexpr uint64_t kNoLease = 0;

  // Where a lease's pages lie in a store's shared pool (kv_cache/
  // shared_memory.h): the pool's epoch and its page ids, in order. A reader
  // that maps the pool of that epoch copies them while the lease lives,
  // with no call to the store. Empty when not known.
  struct PoolPages {
    uint64_t epoch = 0;
    std::vector<int32_t> pages;
    bool empty() const { return pages.empty(); }
  };
  struct Match {
    int64_t matched_tokens = 0;  // a multiple of the page size
    uint64_t lease_id = kNoLease;
    PoolPages pool_pages;  // the lease's, when the store said
  };
  // Row `row` of the rows takes the pages a lease pins: positions
  // [0, tokens); pool_pages, when known (the Match's), spare a store call.
  struct LeasedRow {
    int64_t row = 0;
    uint64_t lease_id = kNoLease;
    int64_t tokens = 0;
    PoolPages pool_pages;
  };
  // Row `row` holds the K/V of `tokens` (whole pages) at positions 0...,
  // to be stored under `cache_salt`. Optionally the caller holds a lease
  // (from MatchPrefix under the same salt) pinning tokens[0, base_tokens);
  // a store may use it instead of matching again. base_matched says the
  // caller matched these tokens itself (base_tokens 0 and no lease when
  // nothing matched), so that a store need not ask again even then.
  struct RowTokens {
    int64_t row = 0;
    absl::Span<const int32_t> tokens;
    uint64_t base_lease_id = kNoLease;
    int64_t base_tokens = 0;
    absl::string_view cache_salt;
    bool base_matched = false;
  };
  struct Stored {
    uint64_t lease_id = kNoLease;  // pins the row's tokens; kNoLease if not stored
    int64_t stored_tokens = 0;     // tokens the lease pins (0 if not stored)
    int64_t inserted_tokens = 0;   // of those, new to the store
    // Why a row the store refused to take was not stored (its pool or a
    // quota full: RESOURCE_EXHAUSTED); OK otherwise. The other rows go on.
    absl::Status not_stored;
    // The lease's pages in the store's shared pool, when the store said
    // (a remote store whose pool this process maps); else empty.
    PoolPages pool_pages;
  };

  virtual ~PrefixStore() = default;

  // The store's page layout. Its page_size is the unit of matching.
  virtual absl::StatusOr<PageLayout> Layout() = 0;

  // The pool whose pages the store's tree holds, if rows may share it (a
  // store in this process): rows over it read and become the tree's pages
  // in place. Null for a store elsewhere (its pages are copied).
  virtual PrefixCache* SharedPool() { return nullptr; }

  // True if Store uses RowTokens' base leases. A caller then keeps the
  // leases it loaded rows from until it stores them; otherwise it releases
  // them after loading, so that those pages stay evictable meanwhile.
  virtual bool UsesBaseLeases() const = 0;

  // How many leading tokens of `tokens` (whole pages) the store holds under
  // `cache_salt`, as far as this process can tell without a round trip: a
  // remote store's page index mapped here (kv_cache/page_index.h). What a
  // MatchPrefix would find now, but pinning nothing (it may be evicted
  // next); nullopt where only a MatchPrefix can tell.
  virtual std::optional<int64_t> CachedTokensHint(absl::Span<const int32_t> tokens,
                                                  absl::string_view cache_salt) {
    return std::nullopt;
  }

  // Each load's row (empty) takes the leading whole pages of its `tokens`
  // cached under its `cache_salt` without a lease or a round trip, where
  // this process maps a remote store's pool and its page index
  // (kv_cache/page_index.h): found in the index, copied out of the pool
  // (every row's copies issued, then one wait for them all), then checked
  // not evicted meanwhile. Returns the tokens each row now holds, in order;
  // 0 where none could be had that way (the row is left empty: MatchPrefix
  // then). The store learns nothing of it: a later Store of the rows
  // matches them (a remote store: all such rows of the call in one
  // MatchBatch).
  struct UnleasedLoad {
    int64_t row = 0;
    absl::Span<const int32_t> tokens;
    absl::string_view cache_salt;
  };
  virtual std::vector<int64_t> LoadUnleasedRows(absl::Span<const UnleasedLoad> loads,
                                                BlockTables& rows) {
    return std::vector<int64_t>(loads.size(), 0);
  }
  // LoadUnleasedRows of one row.
  int64_t LoadUnleased(int64_t row, absl::Span<const int32_t> tokens, absl::string_view cache_salt,
                       BlockTables& rows) {
    const UnleasedLoad load{row, tokens, cache_salt};
    return LoadUnleasedRows({load}, rows).front();
  }

  // The longest prefix of `tokens` cached under `cache_salt`, in whole
  // pages, pinned by a lease (kNoLease when nothing matched).
  virtual absl::StatusOr<Match> MatchPrefix(absl::Span<const int32_t> tokens,
                                            absl::string_view cache_salt) = 0;
  // MatchPrefix of each query, in order (a remote store: in one call). On
  // an error no lease is left.
  struct MatchQuery {
    absl::Span<const int32_t> tokens;
    absl::string_view cache_salt;
  };
  virtual absl::StatusOr<std::vector<Match>> MatchPrefixes(absl::Span<const MatchQuery> queries);

  // Each leased prefix becomes the start of its (empty) row, whose length
  // becomes the prefix's tokens. The caller still releases the leases.
  virtual absl::Status Load(absl::Span<const LeasedRow> loads, BlockTables& rows) = 0;

  // The pages a lease pins, as a run of pages on `device`
  // (page_layout.h): (n, n_layer, 2, n_head, page_size, head_dim).
  virtual absl::StatusOr<torch::Tensor> ReadLeased(uint64_t lease_id, torch::Device device) = 0;

  // As ReadLeased, from page ids a writer's Store returned (Stored's
  // pool_pages) instead of asking the store: gathered out of the pool this
  // process maps. The caller holds the lease that pins them. FAILED_
  // PRECONDITION when no pool of that epoch is mapped here (the caller
  // then uses ReadLeased); INVALID_ARGUMENT for ids outside the pool.
  virtual absl::StatusOr<torch::Tensor> ReadPoolPages(const PoolPages& pages,
                                                      torch::Device device) {
    return absl::FailedPreconditionError("this store maps no shared pool");
  }
  // The pool such ids index, as this process maps it, for a caller that
  // copies the pages itself (a scheduler's admission, page to page): a view
  // that keeps the mapping alive while held. The errors of ReadPoolPages.
  virtual absl::StatusOr<torch::Tensor> PoolOf(const PoolPages& pages) {
    return absl::FailedPreconditionError("this store maps no shared pool");
  }

  // Caches each row's tokens (a multiple of the page size long; their K/V in
  // the row at positions 0..) that the store lacks; one Stored per entry, in
  // order. With `pin`, each stored path is pinned by a new lease, the
  // caller's to release, which `lease_holder` (an identity the store
  // authenticates, e.g. the caller's own caller; empty: none) may use too;
  // without, no lease is left (and a row stored early may be evicted to
  // make room for a later one). A store that has no room for a row does not
  // store it (stored_tokens 0), which is not an error.
  virtual absl::StatusOr<std::vector<Stored>> Store(absl::Span<const RowTokens> stores,
                                                    BlockTables& rows, bool pin,
                                                    absl::string_view lease_holder) = 0;

  // Ends a lease. kNoLease does nothing. NOT_FOUND for an unknown id.
  virtual absl::Status Release(uint64_t lease_id) = 0;
  // Ends every lease of `lease_ids` (a remote store: in one call), the
  // unknown ones aside (NOT_FOUND then, once the rest are released).
  virtual absl::Status ReleaseAll(absl::Span<const uint64_t> lease_ids);

  // Keeps leases alive (stores whose leases expire). Returns the ids the
  // store no longer knows.
  virtual absl::StatusOr<std::vector<uint64_t>> Renew(absl::Span<const uint64_t> lease_ids) = 0;
};

// A PrefixStore over a PrefixCache in this process. When the rows' pool is
// that cache, nothing is copied: Load points rows at the tree's pages and
// Store lets the tree adopt the rows' own pages. Rows over another pool
// (same layout) are copied page by page, one gather per call.
class LocalPrefixStore : public PrefixStore {
 public:
  // `cache` is not owned and must outlive the store.
  explicit LocalPrefixStore(PrefixCache* cache) : cache_(cache) {}

  PrefixCache& cache() { return *cache_; }

  absl::StatusOr<PageLayout> Layout() override;
  PrefixCache* SharedPool() override { return cache_; }
  bool UsesBaseLeases() const override { return false; }
  absl::StatusOr<Match> MatchPrefix(absl::Span<const int32_t> tokens,
                                    absl::string_view cache_salt) override;
  absl::Status Load(absl::Span<const LeasedRow> loads, BlockTables& rows) override;
  absl::StatusOr<torch::Tensor> ReadLeased(uint64_t lease_id, torch::Device device) override;
  // Ignores base leases. Rows over this cache's pool: the tree adopts the
  // rows' own pages of each prefix it lacks (duplicates of what it holds
  // are freed) and the rows read the tree's pages from then on, pinned by
  // leases of their own. Rows over another pool: pages the tree lacks are
  // allocated here and copied; a row that finds no room is not stored.
  absl::StatusOr<std::vector<Stored>> Store(absl::Span<const RowTokens> stores, BlockTables& rows,
                                            bool pin, absl::string_view lease_holder) override;
  absl::Status Release(uint64_t lease_id) override;
  absl::StatusOr<std::vector<uint64_t>> Renew(absl::Span<const uint64_t> lease_ids) override;

 private:
  PrefixCache* cache_;
};

}  // namespace nanoserve

#endif  // NANOSERVE_KV_CACHE_PREFIX_STORE_H_
