// A blocking client of the KV store service (nanoserve.v1.KvStore) in engine
// terms: token ids and K/V tensors in, absl::Status out. Every call has a
// deadline; an unreachable store fails fast with UNAVAILABLE (no waiting for
// the channel), and a hung one fails fast once the circuit breaker opens, so
// callers can fall back to computing K/V themselves.
//
// The data plane (kv_store.proto's Connect): with a shared transport the
// client maps the store's pool once (Pool(); again after the store
// restarted with a new epoch) and moves pages in place: FetchShared gives a
// lease's page ids, ReserveBatch gives pages to write, CommitBatch publishes
// them.
// Otherwise pages cross as bytes (Put, Fetch).
//
// Model identity: with options.model_fingerprint set, a store whose layout
// names another model (Match, Fetch, Connect) is refused with
// FAILED_PRECONDITION saying both (logged once on stderr), and a lease a
// refused Match took is released; the caller computes the prompt itself.
//
// Thread safety: thread-safe (gRPC stubs are).
#ifndef NANOSERVE_KV_STORE_CLIENT_KV_STORE_CLIENT_H_
#define NANOSERVE_KV_STORE_CLIENT_KV_STORE_CLIENT_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/security/credentials.h>
#include <torch/types.h>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "kv_cache/page_layout.h"
#include "kv_cache/shared_memory.h"
#include "kv_store/client/circuit_breaker.h"
#include "nanoserve/v1/kv_store.grpc.pb.h"

namespace nanoserve {

struct KvStoreClientOptions {
  // host:port of the store.
  std::string target;
  // Transport security (rpc/tls.h); null: plaintext.
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  // Bound on any one message, either way.
  int64_t max_message_bytes = 8 << 20;
  // Page bytes per Put chunk, and asked of Fetch.
  int64_t chunk_bytes = 1 << 20;
  // Deadline of each call (a Put or Fetch counts as one call).
  absl::Duration timeout = absl::Seconds(10);
  // A store that times out or is unreachable this many calls in a row is
  // not called for a while: calls fail at once with UNAVAILABLE, so callers
  // compute without it instead of each waiting out `timeout`.
  CircuitBreakerOptions breaker;
  // The data plane: kAuto maps the store's pool when it can (same host, the
  // pool exported to this caller, a CUDA pool only from a CUDA device) and
  // streams bytes otherwise; kBytes never maps; kShm / kCudaIpc insist (the
  // shared calls fail with FAILED_PRECONDITION, and the reason, if that
  // transport cannot be had).
  enum class Transport { kAuto, kBytes, kShm, kCudaIpc };
  Transport transport = Transport::kAuto;
  // Where the caller's rows live: the device a CUDA pool is mapped on.
  torch::Device device = torch::kCPU;
  // The caller's model (engine/model_fingerprint.h), named in every Put; a
  // store that answers a layout of another model is refused
  // (base/model_identity.h). Empty: not checked.
  std::string model_fingerprint;
};

// "auto", "bytes", "shm" or "cuda_ipc" (INVALID_ARGUMENT otherwise).
absl::StatusOr<KvStoreClientOptions::Transport> ParseKvTransport(absl::string_view name);

// What a Put stores besides its pages (KvStoreClient::PutScope; at
// namespace scope so that its member's default can serve the class's
// default arguments).
struct KvPutScope {
  std::string cache_salt;    // the namespace
  std::string lease_holder;  // may use the returned lease too (empty: none)
  // Nonzero (the epoch of the pool this client maps): the store answers
  // the returned lease's page ids (PutResponse.shared) if it is its own.
  uint64_t pool_epoch = 0;
};

class KvStoreClient {
 public:
  explicit KvStoreClient(const KvStoreClientOptions& options);

  struct Match {
    int64_t matched_tokens = 0;
    uint64_t lease_id = 0;
    PageLayout layout;  // the store's
    // The lease's pages in the pool this client maps (its epoch), when
    // mapped; else empty.
    uint64_t pool_epoch = 0;
    std::vector<int32_t> pool_pages;
  };
  // The longest prefix of `tokens` cached under `cache_salt`, with its page
  // ids when the pool is mapped already (Match never maps it). INTERNAL if
  // the store answers with a malformed layout.
  absl::StatusOr<Match> MatchPrefix(absl::Span<const int32_t> tokens,
                                    absl::string_view cache_salt = "");
  // MatchPrefix of each query, in one call (MatchBatch), in order. On an
  // error no lease is left. A store from before MatchBatch (UNIMPLEMENTED)
  // is asked one query a call from then on, and released one lease a call.
  struct MatchQuery {
    absl::Span<const int32_t> tokens;
    absl::string_view cache_salt;
  };
  absl::StatusOr<std::vector<Match>> MatchPrefixes(absl::Span<const MatchQuery> queries);

  // What a Put stores besides its pages.
  using PutScope = KvPutScope;
  // Caches `tokens` (whole pages) under scope.cache_salt; the first
  // base_tokens are pinned by base_lease_id, and `pages` holds the rest: a
  // run of (tokens.size() - base_tokens) / page_size pages of `layout` (the
  // store's) on the CPU, contiguous (kv_store/page_layout.h).
  // PERMISSION_DENIED if this client's identity may not write.
  absl::StatusOr<v1::PutResponse> Put(absl::Span<const int32_t> tokens, uint64_t base_lease_id,
                                      int64_t base_tokens, const torch::Tensor& pages,
                                      const PageLayout& layout, const PutScope& scope = {});

  struct Fetched {
    torch::Tensor pages;  // a run of pages of `layout` on the CPU
    PageLayout layout;
    int64_t tokens = 0;
    int64_t bytes = 0;  // page bytes received
  };
  absl::StatusOr<Fetched> Fetch(uint64_t lease_id);

  absl::Status Release(uint64_t lease_id);
  // Every lease of `lease_ids` (kNoLease skipped; none: no call) in one call;
  // NOT_FOUND names the ids the store did not know, the others released.
  absl::Status Release(absl::Span<const uint64_t> lease_ids);
  // The ids among `lease_ids` the store no longer knows.
  absl::StatusOr<std::vector<uint64_t>> Renew(const std::vector<uint64_t>& lease_ids);
  absl::StatusOr<v1::StatsResponse> Stats();

  // The store's pool as this client maps it.
  struct MappedPool {
    KvTransport transport = KvTransport::kBytes;
    uint64_t epoch = 0;
    PageLayout layout;
    torch::Tensor storage;  // (num_pages, n_layer, 2, n_head, page_size, head_dim)
    // The store's page index (kv_cache/page_index.h), int64 words on the
    // CPU; undefined when the store offers none or it could not be mapped.
    torch::Tensor page_index;
  };
  // The mapped pool to move pages through, or null for bytes. Connects on
  // first use, and again after the mapping was dropped (the store's epoch
  // changed) or a few seconds after the store offered no pool. Fails as
  // the store's calls fail, or with FAILED_PRECONDITION when a forced
  // transport cannot be had.
  absl::StatusOr<std::shared_ptr<const MappedPool>> Pool() ABSL_LOCKS_EXCLUDED(mu_);
  // The transport in use now, and why ("" when shared), for logs and metrics.
  std::string TransportDescription() const ABSL_LOCKS_EXCLUDED(mu_);

  // The page ids a lease pins in `pool`; *tokens their token count.
  absl::StatusOr<std::vector<int32_t>> FetchShared(const MappedPool& pool, uint64_t lease_id,
                                                   int64_t* tokens);
  struct Reservation {
    uint64_t id = 0;
    std::vector<int32_t> pages;
  };
  // A reservation per entry of `pages_per_row` (each >= 1), in one call:
  // granted for the first entries, in order, while the store allows;
  // `refused` says why the rest were not. None granted: the store's error
  // (RESOURCE_EXHAUSTED when full).
  struct Reserved {
    std::vector<Reservation> granted;
    std::string refused;
  };
  absl::StatusOr<Reserved> ReserveBatch(const MappedPool& pool,
                                        absl::Span<const int64_t> pages_per_row);
  // One reservation's commit: tokens[base_tokens:], whose K/V the caller
  // wrote into the reservation's pages (in order) and waited for.
  struct CommitRow {
    absl::Span<const int32_t> tokens;
    uint64_t base_lease_id = 0;
    int64_t base_tokens = 0;
    uint64_t reservation_id = 0;
    PutScope scope;
  };
  // Commits `rows` in one call, in order, and hands the reservations
  // `abandoned` back to the pool: one outcome per row, as a Put's (its
  // response names the lease's pages, `shared`; an epoch refusal of any
  // drops the mapping). The call's own failure (the store unreachable, ...)
  // is the status.
  absl::StatusOr<std::vector<absl::StatusOr<v1::PutResponse>>> CommitBatch(
      const MappedPool& pool, absl::Span<const CommitRow> rows,
      absl::Span<const uint64_t> abandoned = {});

  const std::string& target() const { return options_.target; }

 private:
  // MatchPrefixes of `queries` in calls of `part` queries each (the store's
  // bound; 1 for an older store); on an error no lease is left.
  absl::StatusOr<std::vector<Match>> MatchInParts(absl::Span<const MatchQuery> queries,
                                                  size_t part);
  // OK if the store's `layout` is of this client's model (or either does
  // not say); else FAILED_PRECONDITION, logged the first time.
  absl::Status CheckModel(const v1::KvLayout& layout, const char* what);
  // `layout` in proto terms, naming this client's model.
  v1::KvLayout LayoutProto(const PageLayout& layout) const;
  // A Put's header (no reservation; epoch scope.pool_epoch).
  v1::PutHeader PutHeaderProto(absl::Span<const int32_t> tokens, uint64_t base_lease_id,
                               int64_t base_tokens, const PageLayout& layout,
                               const PutScope& scope) const;
  // Drops the mapping of `epoch` (the store refused it): map again next time.
  void DropPool(uint64_t epoch) ABSL_LOCKS_EXCLUDED(mu_);
  // A shared call's status; an epoch refusal drops the mapping.
  absl::Status FinishedShared(const grpc::Status& status, const char* what, uint64_t epoch);
  // Connect, then map what the store offers; null for bytes.
  absl::StatusOr<std::shared_ptr<const MappedPool>> ConnectAndMap()
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SetDeadline(grpc::ClientContext* context) const;
  // The call's gRPC status as an absl::Status, recorded by the breaker.
  absl::Status Finished(const grpc::Status& status, const char* what);

  KvStoreClientOptions options_;
  CircuitBreaker breaker_;
  // The store answered MatchBatch UNIMPLEMENTED: an older store.
  std::atomic<bool> store_lacks_batches_{false};
  std::unique_ptr<v1::KvStore::Stub> stub_;
  std::atomic<bool> model_mismatch_logged_{false};

  mutable absl::Mutex mu_;
  std::shared_ptr<const MappedPool> pool_ ABSL_GUARDED_BY(mu_);
  bool connected_ ABSL_GUARDED_BY(mu_) = false;  // pool_ (or bytes) decided
  absl::Time decided_at_ ABSL_GUARDED_BY(mu_);
  std::string no_pool_reason_ ABSL_GUARDED_BY(mu_);
};

}  // namespace nanoserve

#endif  // NANOSERVE_KV_STORE_CLIENT_KV_STORE_CLIENT_H_
