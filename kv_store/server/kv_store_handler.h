// The KV store service's logic in proto terms: validates requests, calls the
// PrefixCache, and turns its absl::Status into grpc::Status. The service
// class (kv_store_service.h) only wires these calls to gRPC reactors, so
// unit tests drive the handler directly, without a network.
//
// Page bytes travel as runs of pages (kv_store/page_layout.h). A Put
// buffers its bytes (under a bound on all Puts in flight) and takes its
// pages only when its stream ends, so a stream that stalls or fails holds
// no page.
//
// Who may do what. Every call names its caller (rpc/tls.h's PeerIdentity,
// read by the service from the call's AuthContext):
//   * Put only from writer identities (options.writer_identities, when not
//     empty; a plaintext caller is then no writer): PERMISSION_DENIED for
//     anyone else, before anything is read or changed;
//   * a lease only by the identity that took it or the holder a Put named
//     (PrefixCache's leases): Fetch, Release, RenewLease and a Put's base
//     lease by anyone else find no such lease (NOT_FOUND, as an unknown id);
//   * a caller authenticated without any certificate name is refused
//     (UNAUTHENTICATED): leases could not be told apart.
// Match and Fetch read in the namespace (cache salt) the request names.
//
// Model identity (base/model_identity.h): every layout the store answers
// (Match, Fetch, Connect) names options.model_fingerprint, so a caller of
// another model refuses it; a Put whose layout names another model is
// refused (FAILED_PRECONDITION) before anything is read.
//
// Quotas per caller (caller_quotas.h; the caller is CallerKey: its TLS
// identity, or its address without TLS): leases held and the pages they
// pin, Put streams open and their buffered bytes, pages reserved and not
// committed. A Match's lease counts
// against its caller, a Put's against the holder it names (else its caller:
// prefill, which Puts for others, names them). Past a bound: RESOURCE_EXHAUSTED
// naming the bound. Idle deadlines: leases not renewed within the lease TTL
// are reaped; a Put stream on which nothing arrives for put_idle_timeout is
// cancelled (CancelIdlePuts, from the reaper), so stalled streams give their
// share of the Put allowance back.
//
// The data plane (Connect): a caller on the store's host that may map the
// pool (any caller without TLS; over TLS one of options.pool_identities)
// gets its export and then moves pages in place: Fetch with a shared
// transport answers page ids, Reserve hands out pages to write and a Put
// naming the reservation commits them (the writer finished its writes
// before it sent that header, so the tree never publishes a page half
// written). Every such call names the store's epoch, so a peer still
// mapping the pool of an earlier life of the store is refused
// (FAILED_PRECONDITION) instead of reading another pool's pages. A
// reservation not committed within options.reservation_ttl (its writer
// died) goes back to the pool; reserved pages count against the same
// bound as Put bytes in flight. A writer of a batch takes one reservation
// per row in one Reserve call (ReserveRequest.batch: granted in order while
// they fit, the rest refused with the reason) and commits them in one
// Commit call (each header as its own Put would be: its own lease or its
// own error), handing back the reservations it will not commit. A Put or
// commit whose header names the store's epoch is answered with the lease's
// page ids (PutResponse.shared), so a reader of the mapped pool needs no
// Fetch.
//
// Thread safety: thread-safe; sessions are used by one call at a time.
#ifndef NANOSERVE_KV_STORE_SERVER_KV_STORE_HANDLER_H_
#define NANOSERVE_KV_STORE_SERVER_KV_STORE_HANDLER_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/support/status.h>
#include <torch/types.h>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "base/metrics.h"
#include "base/tls.h"
#include "kv_cache/prefix_cache.h"
#include "kv_store/server/caller_quotas.h"
#include "nanoserve/v1/kv_store.pb.h"

namespace nanoserve {

struct KvStoreHandlerOptions {
  // Largest page chunk a Fetch sends (a request may ask for less).
  int64_t max_chunk_bytes = 1 << 20;
  // Token ids must be in [0, vocab_size).
  int64_t vocab_size = 50257;
  // Longest token run a Match or Put accepts.
  int64_t max_tokens = 1 << 16;
  // Bound on the page bytes of all Put streams in flight (they are buffered
  // until each stream ends); a Put that would pass it gets
  // RESOURCE_EXHAUSTED at its header.
  int64_t max_put_buffer_bytes = int64_t{256} << 20;
  // Bound on the pool pages all writers hold reserved for writing in place
  // and not committed yet; a Reserve that would pass it is refused
  // (RESOURCE_EXHAUSTED). A reservation holds pages of the pool, not memory
  // of its own, so nanoserve-kv-store sets it to half the pool; 0: none but
  // the pool's own.
  int64_t max_reserved_pages = 0;
  // Certificate names (common or subject alternative names) whose holders
  // may Put. Empty: anyone may, the setting without TLS, where callers have
  // no identity.
  std::vector<std::string> writer_identities;
  // This life of the store (kv_store/shared_memory.h NewEpoch): named by
  // every call of the shared data plane.
  uint64_t epoch = 1;
  // Over TLS, the certificate names that may map the pool (Connect).
  // Without TLS any caller on the host may.
  std::vector<std::string> pool_identities;
  // Reserved pages not committed within this go back to the pool.
  absl::Duration reservation_ttl = absl::Seconds(30);
  // Bounds per caller.
  CallerQuotaOptions quotas;
  // A Put stream on which no message arrives for this long is cancelled.
  absl::Duration put_idle_timeout = absl::Seconds(10);
  // The model whose K/V the store holds (engine/model_fingerprint.h): in
  // every layout it answers, and a Put whose layout names another is
  // refused (FAILED_PRECONDITION). Empty: not said, not checked.
  std::string model_fingerprint;
};

class KvStoreHandler {
 public:
  // `cache` and `metrics` (may be null) are not owned.
  KvStoreHandler(PrefixCache* cache, const KvStoreHandlerOptions& options,
                 MetricsRegistry* metrics);

  const v1::KvLayout& layout() const { return layout_proto_; }
  const CallerQuotas& quotas() const { return quotas_; }

  // Whom quotas count `caller` as: base/tls.h's CallerKeyOf (its certificate
  // name over TLS, else its address, no port), as decode's fair shares do.
  static std::string CallerKey(const PeerIdentity& caller);

  grpc::Status Match(const v1::MatchRequest& request, const PeerIdentity& caller,
                     v1::MatchResponse* response);
  grpc::Status MatchBatch(const v1::MatchBatchRequest& request, const PeerIdentity& caller,
                          v1::MatchBatchResponse* response);
  grpc::Status Release(const v1::ReleaseRequest& request, const PeerIdentity& caller,
                       v1::ReleaseResponse* response);
  grpc::Status RenewLease(const v1::RenewLeaseRequest& request, const PeerIdentity& caller,
                          v1::RenewLeaseResponse* response);
  grpc::Status Stats(const v1::StatsRequest& request, v1::StatsResponse* response);
  grpc::Status Connect(const v1::ConnectRequest& request, const PeerIdentity& caller,
                       v1::ConnectResponse* response);
  grpc::Status Reserve(const v1::ReserveRequest& request, const PeerIdentity& caller,
                       v1::ReserveResponse* response);
  grpc::Status Commit(const v1::CommitRequest& request, const PeerIdentity& caller,
                      v1::CommitResponse* response);

  // Calls since start, by method (Stats' *_calls).
  struct CallCounts {
    std::atomic<int64_t> fetch{0};
    std::atomic<int64_t> put{0};
    std::atomic<int64_t> reserve{0};
    std::atomic<int64_t> commit{0};
    std::atomic<int64_t> match{0};  // Match and MatchBatch
    std::atomic<int64_t> release{0};
  };
  const CallCounts& calls() const { return calls_; }

  // One Put call: OnMessage for each message in order, then Finish.
  class PutSession {
   public:
    ~PutSession();  // frees pages that were allocated and not inserted
    grpc::Status OnMessage(const v1::PutRequest& message);
    grpc::Status Finish(v1::PutResponse* response);
    // How to end the call when it idles past put_idle_timeout (e.g. the
    // server context's TryCancel); runs on the reaper's thread while the
    // session lives. Without one an idle session is only marked.
    void SetCancel(std::function<void()> cancel);

   private:
    friend class KvStoreHandler;
    PutSession(KvStoreHandler* handler, const PeerIdentity& caller);
    grpc::Status OnHeader(const v1::PutHeader& header);
    // A header naming a reservation: its pages are the new ones.
    grpc::Status OnCommitHeader(const v1::PutHeader& header);
    // `over` (a quota's or the model check's refusal) as the call's status;
    // a refused commit's reservation is freed at once.
    grpc::Status Refuse(const v1::PutHeader& header, const absl::Status& over);
    // Inserts base `pages` + the reservation's.
    grpc::Status FinishCommit(std::vector<int32_t> pages, v1::PutResponse* response);
    // The first base_pages_ pages the base lease pins (into *pages if not
    // null); NOT_FOUND if the lease is gone.
    grpc::Status BasePages(std::vector<int32_t>* pages) const;
    // The new lease's pages into response->shared, when the header asked
    // (named the store's epoch).
    void AnswerPages(v1::PutResponse* response) const;

    KvStoreHandler* handler_;
    const PeerIdentity caller_;
    bool have_header_ = false;
    std::vector<int32_t> tokens_;
    std::string cache_salt_;
    std::string lease_holder_;
    uint64_t base_lease_id_ = 0;
    int64_t base_pages_ = 0;
    int64_t new_pages_ = 0;  // taken from the pool at Finish
    // A commit of a reservation: its pages, the session's until inserted.
    std::vector<int32_t> reserved_;
    bool answer_pages_ = false;             // the header named the store's epoch
    std::string bytes_;                     // the new pages, as they arrive
    int64_t expected_bytes_ = 0;            // counted in the handler's put_bytes_in_flight_
    bool counted_ = false;                  // a stream counted in the caller's quota
    int64_t quota_bytes_ = 0;               // its bytes there
    std::atomic<int64_t> last_message_ns_;  // absl::GetCurrentTimeNanos()
    std::atomic<bool> idled_{false};        // cancelled by CancelIdlePuts
    std::function<void()> cancel_;          // guarded by the handler's puts_mu_
  };
  std::unique_ptr<PutSession> StartPut(const PeerIdentity& caller) {
    calls_.put.fetch_add(1);
    return std::unique_ptr<PutSession>(new PutSession(this, caller));
  }
  // Cancels the Put streams idle since `now` - put_idle_timeout; returns
  // how many.
  int64_t CancelIdlePuts(absl::Time now) ABSL_LOCKS_EXCLUDED(puts_mu_);

  // One Fetch call: the header, then chunks, until Next returns false; then
  // Done() is the call's status. Pages of a CPU pool are read in place while
  // they stream, so the caller must hold the lease until the Fetch ends:
  // Done() is ABORTED if the lease was released (or expired) meanwhile.
  class FetchSession {
   public:
    bool Next(v1::FetchResponse* message);
    grpc::Status Done() const;

   private:
    friend class KvStoreHandler;
    FetchSession() = default;
    v1::FetchHeader header_;
    // A CPU pool is read in place (pool_, pages_); another device's pages are
    // gathered to the CPU first (gathered_: (n, L, 2, H, P, D), contiguous).
    PrefixCache* cache_ = nullptr;    // set when the pool is read in place
    CallerQuotas* quotas_ = nullptr;  // with cache_: the lease is renewed in both
    uint64_t lease_id_ = 0;
    std::string caller_;  // the lease's user
    std::vector<int32_t> pages_;
    PageLayout layout_;
    torch::Tensor gathered_;
    bool shared_ = false;  // page ids (SharedPages), not bytes
    uint64_t epoch_ = 0;
    int64_t chunk_bytes_ = 0;
    int64_t offset_ = 0;
    bool header_sent_ = false;
  };
  grpc::Status StartFetch(const v1::FetchRequest& request, const PeerIdentity& caller,
                          std::unique_ptr<FetchSession>* session);

  // Releases leases not renewed within the TTL, and frees reservations not
  // committed within theirs; returns how many leases.
  int64_t ReapExpiredLeases();
  int64_t reserved_pages() const ABSL_LOCKS_EXCLUDED(reservations_mu_);

 private:
  struct Reservation {
    std::string caller;     // who may commit it (its certificate name)
    std::string quota_key;  // whom its pages count against (CallerKey)
    std::vector<int32_t> pages;
    absl::Time deadline;
  };
  // One reservation of `pages` (validated) for `caller`, counted against
  // the quota of `key`: its id and pages, or why not (RESOURCE_EXHAUSTED).
  absl::StatusOr<v1::ReservedPages> ReserveOne(const PeerIdentity& caller, const std::string& key,
                                               int64_t pages) ABSL_LOCKS_EXCLUDED(reservations_mu_);
  // Commits one header of a Commit call, as a Put of it alone would.
  grpc::Status CommitOne(const v1::PutHeader& header, const PeerIdentity& caller,
                         v1::PutResponse* response);
  // FAILED_PRECONDITION unless `epoch` is this store's.
  grpc::Status CheckEpoch(uint64_t epoch, const char* what) const;
  // Why `caller` may not map the pool ("" if it may).
  std::string NoPoolReason(const std::string& host_id, const PeerIdentity& caller) const;
  // Takes reservation `id` of `caller` out of the table: its pages, now
  // the caller's to insert or free. NOT_FOUND if unknown, expired or
  // another's.
  absl::StatusOr<std::vector<int32_t>> TakeReservation(uint64_t id, const PeerIdentity& caller)
      ABSL_LOCKS_EXCLUDED(reservations_mu_);

  grpc::Status CheckTokens(const google::protobuf::RepeatedField<int32_t>& tokens) const;
  // A Match's arguments, then the match itself (a lease for `key`).
  grpc::Status CheckMatch(const v1::MatchRequest& request) const;
  grpc::Status MatchChecked(const v1::MatchRequest& request, const PeerIdentity& caller,
                            const std::string& key, v1::MatchResponse* response);
  // Releases `caller`'s lease in the cache and in its quota; the cache's
  // error (NOT_FOUND for an unknown id) otherwise.
  absl::Status EndLease(uint64_t lease_id, const PeerIdentity& caller);
  // Counts a Put's new lease (pinning the tree's pages of the path) against
  // `holder`, or against `caller` when no holder is named.
  void CountPutLease(const PrefixCache::InsertResult& inserted, const PeerIdentity& caller,
                     const std::string& holder);
  // UNAUTHENTICATED for a certificate without a name.
  static grpc::Status CheckCaller(const PeerIdentity& caller);
  // PERMISSION_DENIED unless `caller` may Put.
  grpc::Status CheckWriter(const PeerIdentity& caller) const;

  PrefixCache* cache_;
  const KvStoreHandlerOptions options_;
  const PageLayout layout_;  // the pool's
  const v1::KvLayout layout_proto_;
  const int64_t bytes_per_page_;
  Counter* fetched_bytes_ = nullptr;
  Counter* put_bytes_ = nullptr;
  Counter* shared_fetched_bytes_ = nullptr;
  Counter* shared_put_bytes_ = nullptr;
  std::atomic<int64_t> put_bytes_in_flight_{0};
  CallCounts calls_;
  const std::string host_id_;
  mutable absl::Mutex reservations_mu_;
  absl::flat_hash_map<uint64_t, Reservation> reservations_ ABSL_GUARDED_BY(reservations_mu_);
  int64_t reserved_pages_ ABSL_GUARDED_BY(reservations_mu_) = 0;
  CallerQuotas quotas_;  // called under reservations_mu_ too (its lock comes after)
  absl::Mutex puts_mu_;
  absl::flat_hash_set<PutSession*> puts_ ABSL_GUARDED_BY(puts_mu_);  // open Put streams
};

}  // namespace nanoserve

#endif  // NANOSERVE_KV_STORE_SERVER_KV_STORE_HANDLER_H_
