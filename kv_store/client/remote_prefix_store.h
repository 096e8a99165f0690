// A PrefixStore (kv_store/prefix_store.h) over the KV store service: the
// same prefix prefill that runs against a PrefixCache in this process runs
// against the nanoserve-kv-store service through this adapter. Pages move
// through the store's pool mapped in place when the client could map it
// (KvStoreClient::Pool: shared memory or CUDA IPC; one gather out of it
// per leased row, one scatter into reserved pages per stored row, only
// page ids on gRPC), and otherwise as gRPC streams of bytes (Put, Fetch)
// staged on the CPU in the page layout of kv_store/page_layout.h.
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
  // FAILED_PRECONDITION (and no lease held) if the store's layout is no
  // longer the one Layout() returned (it restarted with another).
  absl::StatusOr<Match> MatchPrefix(absl::Span<const int32_t> tokens,
                                    absl::string_view cache_salt) override ABSL_LOCKS_EXCLUDED(mu_);
  // One Fetch per leased row.
  absl::Status Load(absl::Span<const LeasedRow> loads, BlockTables& rows) override;
  absl::StatusOr<torch::Tensor> ReadLeased(uint64_t lease_id, torch::Device device) override;
  // Per row: Put of the pages beyond the row's base lease, or, without one,
  // Match first and Put what the store lacks (with a lease_holder, a row
  // the store holds whole is Put too, without pages, for the holder's
  // lease). A store without room (RESOURCE_EXHAUSTED) does not store the
  // row.
  absl::StatusOr<std::vector<Stored>> Store(absl::Span<const RowTokens> stores, BlockTables& rows,
                                            bool pin, absl::string_view lease_holder) override;
  absl::Status Release(uint64_t lease_id) override;
  absl::StatusOr<std::vector<uint64_t>> Renew(absl::Span<const uint64_t> lease_ids) override;

 private:
  // The run of pages a lease pins, on `device`, *tokens their token count:
  // gathered out of `pool` when the pool is mapped (the caller waits for
  // the device before the lease may end), else fetched as bytes.
  absl::StatusOr<torch::Tensor> ReadRun(const KvStoreClient::MappedPool* pool, uint64_t lease_id,
                                        torch::Device device, int64_t* tokens);
  // Reserve, write `kv` (n_layer, 2, n_head, T, head_dim) into the pages in
  // place, wait, Commit.
  absl::StatusOr<v1::PutResponse> PutShared(const KvStoreClient::MappedPool& pool,
                                            const RowTokens& store,
                                            const KvStoreClient::Match& base,
                                            const torch::Tensor& kv,
                                            const KvStoreClient::PutScope& scope);
  absl::StatusOr<Stored> StoreRow(const RowTokens& store, BlockTables& rows, bool pin,
                                  absl::string_view lease_holder);

  KvStoreClient* client_;
  absl::Mutex mu_;
  std::optional<PageLayout> layout_ ABSL_GUARDED_BY(mu_);
};

}  // namespace nanoserve

#endif  // NANOSERVE_KV_STORE_CLIENT_REMOTE_PREFIX_STORE_H_
