// A PrefixStore (kv_store/prefix_store.h) over the KV store service: the
// same prefix prefill that runs against a PrefixCache in this process runs
// against the nanoserve-kv-store service through this adapter. Pages move
// through the store's pool mapped in place when the client could map it
// (KvStoreClient::Pool: shared memory or CUDA IPC; one gather out of it
// per leased row, one scatter into reserved pages per stored row, only
// page ids on gRPC; a Store takes one Reserve and one Commit call for all
// its rows written in place, and returns each lease's page ids so that a
// reader of the same pool skips the Fetch: ReadPoolPages), and otherwise as gRPC streams of bytes
// (Put, Fetch) staged on the CPU in the page layout of kv_store/page_layout.h.
//
// Thread safety: thread-safe.
#ifndef NANOSERVE_KV_STORE_CLIENT_REMOTE_PREFIX_STORE_H_
#define NANOSERVE_KV_STORE_CLIENT_REMOTE_PREFIX_STORE_H_

#include <cstdint>
#include <optional>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "kv_cache/prefix_store.h"
#include "kv_store/client/kv_store_client.h"

namespace nanoserve {

class RemotePrefixStore : public PrefixStore {
 public:
  // `client` is not owned and must outlive the store.
  explicit RemotePrefixStore(KvStoreClient* client) : client_(client) {}

  // Asks the store once (Stats), then remembers it.
  absl::StatusOr<PageLayout> Layout() override ABSL_LOCKS_EXCLUDED(mu_);
  // A base lease saves a Match per stored row.
  bool UsesBaseLeases() const override { return true; }
  // From the store's page index where the pool and the index are mapped.
  std::optional<int64_t> CachedTokensHint(absl::Span<const int32_t> tokens,
                                          absl::string_view cache_salt) override;
  std::vector<int64_t> LoadUnleasedRows(absl::Span<const UnleasedLoad> loads,
                                        BlockTables& rows) override;
  // FAILED_PRECONDITION (and no lease held) if the store's layout is no
  // longer the one Layout() returned (it restarted with another).
  absl::StatusOr<Match> MatchPrefix(absl::Span<const int32_t> tokens,
                                    absl::string_view cache_salt) override ABSL_LOCKS_EXCLUDED(mu_);
  // One MatchBatch call.
  absl::StatusOr<std::vector<Match>> MatchPrefixes(absl::Span<const MatchQuery> queries) override
      ABSL_LOCKS_EXCLUDED(mu_);
  // One Fetch per leased row.
  absl::Status Load(absl::Span<const LeasedRow> loads, BlockTables& rows) override;
  absl::StatusOr<torch::Tensor> ReadLeased(uint64_t lease_id, torch::Device device) override;
  // One gather out of the mapped pool, no call to the store (unless this
  // client has not connected yet).
  absl::StatusOr<torch::Tensor> PoolOf(const PoolPages& pages) override;
  absl::StatusOr<torch::Tensor> ReadPoolPages(const PoolPages& pages,
                                              torch::Device device) override;
  // Per row, the pages beyond the row's base lease, or, without one, Match
  // first and store what the store lacks (with a lease_holder, a row the
  // store holds whole is Put too, without pages, for the holder's lease).
  // With the pool mapped: one Reserve for all rows (the rows it does not
  // grant are not stored, with the store's reason), the rows written in
  // place, one wait for the device, one Commit; the pinned rows' Stored
  // name their pages (pool_pages). Else a Put of bytes per row. A store
  // without room (RESOURCE_EXHAUSTED) does not store the row; any other
  // failure fails the call and leaves no lease held.
  absl::StatusOr<std::vector<Stored>> Store(absl::Span<const RowTokens> stores, BlockTables& rows,
                                            bool pin, absl::string_view lease_holder) override;
  absl::Status Release(uint64_t lease_id) override;
  absl::Status ReleaseAll(absl::Span<const uint64_t> lease_ids) override;  // one call
  absl::StatusOr<std::vector<uint64_t>> Renew(absl::Span<const uint64_t> lease_ids) override;

 private:
  // The run of pages a lease pins, on `device`, *tokens their token count:
  // gathered out of `pool` when the pool is mapped (the caller waits for
  // the device before the lease may end), else fetched as bytes.
  absl::StatusOr<torch::Tensor> ReadRun(const KvStoreClient::MappedPool* pool, uint64_t lease_id,
                                        torch::Device device, int64_t* tokens);
  // A row of a Store call to write in place: its base (a lease of the
  // caller's, or of ours from a Match) and its K/V beyond it.
  struct PendingRow {
    size_t index = 0;  // into the call's result
    const RowTokens* store = nullptr;
    KvStoreClient::Match base;
    bool own_lease = false;  // base is ours: released once the row is committed
    // (n_layer, 2, n_head, T, head_dim), the tokens beyond base, when the
    // rows' page size is not the pool's; else undefined: copied page to page.
    torch::Tensor kv;
  };
  // Stores row `index` at once (over bytes, or nothing to write) into
  // out[index], or, when it is to be written into `pool` (not null), adds
  // it to *in_place. `base_match`: Store's match of a row whose caller
  // matched no base (its lease the row's own from then on), else null.
  absl::Status PrepareRow(size_t index, const RowTokens& store, BlockTables& rows, bool pin,
                          absl::string_view lease_holder, const KvStoreClient::MappedPool* pool,
                          std::vector<Stored>& out, std::vector<PendingRow>* in_place,
                          const KvStoreClient::Match* base_match);
  // One Reserve for `in_place`, the writes, one wait, one Commit; each
  // row's outcome into out[row.index].
  absl::Status StoreInPlace(const KvStoreClient::MappedPool& pool,
                            const std::vector<PendingRow>& in_place, const BlockTables& rows,
                            bool pin, absl::string_view lease_holder, std::vector<Stored>& out);
  // A Put's (or commit's) outcome for a row of `tokens` tokens; without
  // `pin` its lease is released.
  Stored StoredFrom(const v1::PutResponse& put, int64_t tokens, bool pin);

  KvStoreClient* client_;
  absl::Mutex mu_;
  std::optional<PageLayout> layout_ ABSL_GUARDED_BY(mu_);
};

}  // namespace nanoserve

#endif  // NANOSERVE_KV_STORE_CLIENT_REMOTE_PREFIX_STORE_H_
