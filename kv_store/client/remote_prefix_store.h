// A PrefixStore (kv_store/prefix_store.h) over the KV store service: the
// same prefix prefill that runs against a PrefixCache in this process runs
// against the nanoserve-kv-store service through this adapter. Page bytes
// cross as gRPC streams (KvStoreClient's Put and Fetch), staged on the CPU
// in the page layout of kv_store/page_layout.h.
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
  absl::StatusOr<Stored> StoreRow(const RowTokens& store, BlockTables& rows, bool pin,
                                  absl::string_view lease_holder);

  KvStoreClient* client_;
  absl::Mutex mu_;
  std::optional<PageLayout> layout_ ABSL_GUARDED_BY(mu_);
};

}  // namespace nanoserve

#endif  // NANOSERVE_KV_STORE_CLIENT_REMOTE_PREFIX_STORE_H_
