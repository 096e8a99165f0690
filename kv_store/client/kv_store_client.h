// A blocking client of the KV store service (nanoserve.v1.KvStore) in engine
// terms: token ids and K/V tensors in, absl::Status out. Every call has a
// deadline; an unreachable store fails fast with UNAVAILABLE (no waiting for
// the channel), and a hung one fails fast once the circuit breaker opens, so
// callers can fall back to computing K/V themselves.
//
// Thread safety: thread-safe (gRPC stubs are).
#ifndef NANOSERVE_KV_STORE_CLIENT_KV_STORE_CLIENT_H_
#define NANOSERVE_KV_STORE_CLIENT_KV_STORE_CLIENT_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/security/credentials.h>
#include <torch/types.h>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "kv_cache/page_layout.h"
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
};

class KvStoreClient {
 public:
  explicit KvStoreClient(const KvStoreClientOptions& options);

  struct Match {
    int64_t matched_tokens = 0;
    uint64_t lease_id = 0;
    PageLayout layout;  // the store's
  };
  // The longest prefix of `tokens` cached under `cache_salt`. INTERNAL if
  // the store answers with a malformed layout.
  absl::StatusOr<Match> MatchPrefix(absl::Span<const int32_t> tokens,
                                    absl::string_view cache_salt = "");

  // What a Put stores besides its pages.
  struct PutScope {
    std::string cache_salt;    // the namespace
    std::string lease_holder;  // may use the returned lease too (empty: none)
  };
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
  // The ids among `lease_ids` the store no longer knows.
  absl::StatusOr<std::vector<uint64_t>> Renew(const std::vector<uint64_t>& lease_ids);
  absl::StatusOr<v1::StatsResponse> Stats();

  const std::string& target() const { return options_.target; }

 private:
  void SetDeadline(grpc::ClientContext* context) const;
  // The call's gRPC status as an absl::Status, recorded by the breaker.
  absl::Status Finished(const grpc::Status& status, const char* what);

  KvStoreClientOptions options_;
  CircuitBreaker breaker_;
  std::unique_ptr<v1::KvStore::Stub> stub_;
};

}  // namespace nanoserve

#endif  // NANOSERVE_KV_STORE_CLIENT_KV_STORE_CLIENT_H_
