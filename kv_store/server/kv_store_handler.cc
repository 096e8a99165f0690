#include "kv_store/server/kv_store_handler.h"

#include <algorithm>
#include <cstring>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/model_identity.h"
#include "base/status.h"
#include "kv_cache/page_layout.h"
#include "kv_cache/prompt_check.h"
#include "kv_cache/shared_memory.h"
#include "kv_store/client/kv_wire.h"

namespace nanoserve {
namespace {

// The longest identity a Put may name as its lease's holder (a
// certificate name).
constexpr int64_t kMaxLeaseHolderBytes = 1024;
// The most queries a MatchBatch and lease ids a Release may carry.
constexpr int kMaxBatchQueries = 1024;
constexpr int64_t kMaxReleaseIds = 4096;

grpc::Status Invalid(const std::string& message) {
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, message);
}

// `layout` in proto terms, naming the model `fingerprint`.
v1::KvLayout LayoutOfModel(const PageLayout& layout, const std::string& fingerprint) {
  v1::KvLayout proto = KvLayoutToProto(layout);
  proto.set_model_fingerprint(fingerprint);
  return proto;
}

}  // namespace

KvStoreHandler::KvStoreHandler(PrefixCache* cache, const KvStoreHandlerOptions& options,
                               MetricsRegistry* metrics)
    : cache_(cache),
      options_(options),
      layout_(cache->options().pool.layout),
      layout_proto_(LayoutOfModel(layout_, options.model_fingerprint)),
      bytes_per_page_(layout_.bytes_per_page()),
      host_id_(HostId()),
      quotas_(options.quotas) {
  if (metrics == nullptr) return;
  metrics->AddGauge("nanoserve_kv_store_callers", "Callers holding leases or Put streams.",
                    [this] { return static_cast<double>(quotas_.callers()); });
  shared_fetched_bytes_ = metrics->AddCounter(
      "nanoserve_kv_store_shared_fetched_bytes_total",
      "Page bytes handed over in place by Fetch (page ids of the mapped pool).");
  shared_put_bytes_ =
      metrics->AddCounter("nanoserve_kv_store_shared_put_bytes_total",
                          "Page bytes written in place through the mapped pool and committed.");
  metrics->AddGauge("nanoserve_kv_store_reserved_pages",
                    "Pages reserved for writers in place, not committed yet.",
                    [this] { return static_cast<double>(reserved_pages()); });
  fetched_bytes_ =
      metrics->AddCounter("nanoserve_kv_store_fetched_bytes_total", "Page bytes sent by Fetch.");
  put_bytes_ = metrics->AddCounter("nanoserve_kv_store_put_bytes_total",
                                   "Page bytes received by Put and inserted.");
  auto count = [this](const std::atomic<int64_t> CallCounts::*field) {
    return [this, field] { return static_cast<double>((calls_.*field).load()); };
  };
  metrics->AddObservedCounter("nanoserve_kv_store_fetch_calls_total", "Fetch calls.",
                              count(&CallCounts::fetch));
  metrics->AddObservedCounter("nanoserve_kv_store_put_calls_total", "Put calls.",
                              count(&CallCounts::put));
  metrics->AddObservedCounter("nanoserve_kv_store_reserve_calls_total",
                              "Reserve calls (one may reserve for a whole batch).",
                              count(&CallCounts::reserve));
  metrics->AddObservedCounter("nanoserve_kv_store_commit_calls_total",
                              "Commit calls (one may commit a whole batch).",
                              count(&CallCounts::commit));
  metrics->AddObservedCounter("nanoserve_kv_store_match_calls_total",
                              "Match and MatchBatch calls (one may match a whole batch).",
                              count(&CallCounts::match));
  metrics->AddObservedCounter("nanoserve_kv_store_release_calls_total",
                              "Release calls (one may release many leases).",
                              count(&CallCounts::release));
  auto stat = [cache](int64_t PrefixCacheStats::*field) {
    return [cache, field] { return static_cast<double>(cache->Stats().*field); };
  };
  metrics->AddGauge("nanoserve_kv_store_pages_total", "Pages in the pool.",
                    stat(&PrefixCacheStats::pages_total));
  metrics->AddGauge("nanoserve_kv_store_pages_in_use", "Pages cached or being written.",
                    stat(&PrefixCacheStats::pages_in_use));
  metrics->AddGauge("nanoserve_kv_store_pages_pinned", "Cached pages pinned by a lease.",
                    stat(&PrefixCacheStats::pages_pinned));
  metrics->AddGauge("nanoserve_kv_store_active_leases", "Leases held.",
                    stat(&PrefixCacheStats::active_leases));
  metrics->AddObservedCounter("nanoserve_kv_store_evicted_pages_total",
                              "Cached pages evicted (LRU) since start.",
                              stat(&PrefixCacheStats::evicted_pages));
  metrics->AddObservedCounter("nanoserve_kv_store_expired_leases_total",
                              "Leases released because their holder stopped renewing them.",
                              stat(&PrefixCacheStats::expired_leases));
  metrics->AddObservedCounter("nanoserve_kv_store_lookup_tokens_total", "Tokens passed to Match.",
                              stat(&PrefixCacheStats::lookup_tokens));
  metrics->AddObservedCounter("nanoserve_kv_store_hit_tokens_total", "Tokens Match found cached.",
                              stat(&PrefixCacheStats::hit_tokens));
  metrics->AddGauge(
      "nanoserve_kv_store_prefix_hit_rate",
      "hit_tokens / lookup_tokens since start (0 before any lookup).", [cache] {
        const PrefixCacheStats s = cache->Stats();
        return s.lookup_tokens == 0 ? 0.0 : static_cast<double>(s.hit_tokens) / s.lookup_tokens;
      });
}

grpc::Status KvStoreHandler::CheckTokens(
    const google::protobuf::RepeatedField<int32_t>& tokens) const {
  if (tokens.empty()) return grpc::Status::OK;  // matches nothing
  return ToGrpcStatus(ValidatePrompt(absl::MakeConstSpan(tokens.data(), tokens.size()),
                                     options_.vocab_size, options_.max_tokens));
}

std::string KvStoreHandler::CallerKey(const PeerIdentity& caller) { return CallerKeyOf(caller); }

grpc::Status KvStoreHandler::CheckCaller(const PeerIdentity& caller) {
  if (caller.authenticated && caller.name.empty()) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "the client certificate names no one (no common or alternative name)");
  }
  return grpc::Status::OK;
}

grpc::Status KvStoreHandler::CheckWriter(const PeerIdentity& caller) const {
  if (options_.writer_identities.empty()) return grpc::Status::OK;
  for (const std::string& writer : options_.writer_identities) {
    if (caller.HasName(writer)) return grpc::Status::OK;
  }
  return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                      caller.authenticated
                          ? absl::StrCat("Put: '", caller.name, "' is not a writer of this store")
                          : std::string("Put: writers must authenticate (TLS client certificate)"));
}

grpc::Status KvStoreHandler::CheckMatch(const v1::MatchRequest& request) const {
  if (grpc::Status bad = CheckTokens(request.tokens()); !bad.ok()) return bad;
  return ToGrpcStatus(ValidateCacheSalt(request.cache_salt()));
}

grpc::Status KvStoreHandler::Match(const v1::MatchRequest& request, const PeerIdentity& caller,
                                   v1::MatchResponse* response) {
  calls_.match.fetch_add(1);
  if (grpc::Status bad = CheckCaller(caller); !bad.ok()) return bad;
  if (grpc::Status bad = CheckMatch(request); !bad.ok()) return bad;
  return MatchChecked(request, caller, CallerKey(caller), response);
}

grpc::Status KvStoreHandler::MatchBatch(const v1::MatchBatchRequest& request,
                                        const PeerIdentity& caller,
                                        v1::MatchBatchResponse* response) {
  calls_.match.fetch_add(1);
  if (grpc::Status bad = CheckCaller(caller); !bad.ok()) return bad;
  const int n = request.queries_size();
  if (n == 0 || n > kMaxBatchQueries) {
    return Invalid(absl::StrCat("MatchBatch: ", n, " queries; 1 to ", kMaxBatchQueries));
  }
  for (int i = 0; i < n; ++i) {
    if (grpc::Status bad = CheckMatch(request.queries(i)); !bad.ok()) {
      return grpc::Status(bad.error_code(),
                          absl::StrCat("MatchBatch query ", i, ": ", bad.error_message()));
    }
  }
  const std::string key = CallerKey(caller);
  for (int i = 0; i < n; ++i) {
    grpc::Status matched = MatchChecked(request.queries(i), caller, key, response->add_matches());
    if (matched.ok()) continue;
    for (const v1::MatchResponse& taken : response->matches()) {  // none is left behind
      if (taken.lease_id() != PrefixCache::kNoLease)
        EndLease(taken.lease_id(), caller).IgnoreError();
    }
    response->Clear();
    return grpc::Status(matched.error_code(),
                        absl::StrCat("MatchBatch query ", i, ": ", matched.error_message()));
  }
  return grpc::Status::OK;
}

grpc::Status KvStoreHandler::MatchChecked(const v1::MatchRequest& request,
                                          const PeerIdentity& caller, const std::string& key,
                                          v1::MatchResponse* response) {
  if (absl::Status over = quotas_.CheckLease(key); !over.ok()) {
    return ToGrpcStatus(absl::ResourceExhaustedError(absl::StrCat("Match: ", over.message())));
  }
  PrefixCache::MatchResult match =
      cache_->Match(request.tokens(), request.cache_salt(), caller.name);
  if (match.lease_id != PrefixCache::kNoLease) {
    quotas_.AddLease(match.lease_id, key, match.pages, absl::Now());
  }
  response->set_matched_tokens(match.matched_tokens);
  response->set_lease_id(match.lease_id);
  *response->mutable_layout() = layout_proto_;
  if (match.lease_id != PrefixCache::kNoLease && request.epoch() == options_.epoch &&
      cache_->segment().transport != KvTransport::kBytes) {
    response->mutable_shared()->set_epoch(options_.epoch);
    response->mutable_shared()->mutable_pages()->Add(match.pages.begin(), match.pages.end());
    // Handed over in place, as a Fetch of ids would have.
    if (shared_fetched_bytes_ != nullptr) {
      shared_fetched_bytes_->Increment(static_cast<double>(match.pages.size()) * bytes_per_page_);
    }
  }
  const absl::Duration ttl = cache_->options().lease_ttl;
  response->set_lease_ttl_ms(ttl == absl::InfiniteDuration() ? 0 : absl::ToInt64Milliseconds(ttl));
  return grpc::Status::OK;
}

grpc::Status KvStoreHandler::Release(const v1::ReleaseRequest& request, const PeerIdentity& caller,
                                     v1::ReleaseResponse*) {
  calls_.release.fetch_add(1);
  if (grpc::Status bad = CheckCaller(caller); !bad.ok()) return bad;
  std::vector<uint64_t> ids(request.lease_ids().begin(), request.lease_ids().end());
  if (request.lease_id() != PrefixCache::kNoLease) ids.insert(ids.begin(), request.lease_id());
  if (ids.empty()) return Invalid("Release: no lease id");
  if (static_cast<int64_t>(ids.size()) > kMaxReleaseIds) {
    return Invalid(absl::StrCat("Release: ", ids.size(), " lease ids; at most ", kMaxReleaseIds));
  }
  for (uint64_t id : ids) {
    if (id == PrefixCache::kNoLease) return Invalid("Release: lease id 0");
  }
  absl::Status first_error = absl::OkStatus();  // a single id's, as it was
  std::vector<uint64_t> unknown;
  for (uint64_t id : ids) {
    absl::Status released = EndLease(id, caller);
    if (released.ok()) continue;
    if (first_error.ok()) first_error = released;
    if (released.code() == absl::StatusCode::kNotFound) unknown.push_back(id);
  }
  if (ids.size() == 1 || first_error.code() != absl::StatusCode::kNotFound) {
    return ToGrpcStatus(first_error);
  }
  return ToGrpcStatus(
      absl::NotFoundError(absl::StrCat("Release: no lease ", absl::StrJoin(unknown, ", "),
                                       " (the other ", ids.size() - unknown.size(), " released)")));
}

absl::Status KvStoreHandler::EndLease(uint64_t lease_id, const PeerIdentity& caller) {
  absl::Status released = cache_->Release(lease_id, caller.name);
  if (released.ok()) quotas_.EndLease(lease_id);
  return released;
}

grpc::Status KvStoreHandler::RenewLease(const v1::RenewLeaseRequest& request,
                                        const PeerIdentity& caller,
                                        v1::RenewLeaseResponse* response) {
  if (grpc::Status bad = CheckCaller(caller); !bad.ok()) return bad;
  const absl::Time now = absl::Now();
  for (uint64_t id : request.lease_ids()) {
    if (cache_->RenewLease(id, caller.name).ok()) {
      quotas_.RenewLease(id, now);
    } else {
      response->add_unknown_lease_ids(id);
    }
  }
  return grpc::Status::OK;
}

grpc::Status KvStoreHandler::Stats(const v1::StatsRequest&, v1::StatsResponse* response) {
  const PrefixCacheStats s = cache_->Stats();
  *response->mutable_layout() = layout_proto_;
  response->set_bytes_per_page(bytes_per_page_);
  response->set_lookups(s.lookups);
  response->set_lookup_tokens(s.lookup_tokens);
  response->set_hit_tokens(s.hit_tokens);
  response->set_inserted_tokens(s.inserted_tokens);
  response->set_evicted_pages(s.evicted_pages);
  response->set_expired_leases(s.expired_leases);
  response->set_pages_total(s.pages_total);
  response->set_pages_free(s.pages_free);
  response->set_pages_in_use(s.pages_in_use);
  response->set_pages_cached(s.pages_cached);
  response->set_pages_pinned(s.pages_pinned);
  response->set_nodes(s.nodes);
  response->set_active_leases(s.active_leases);
  if (fetched_bytes_ != nullptr) {
    response->set_fetched_bytes(static_cast<int64_t>(fetched_bytes_->value()));
    response->set_put_bytes(static_cast<int64_t>(put_bytes_->value()));
    response->set_shared_fetched_bytes(static_cast<int64_t>(shared_fetched_bytes_->value()));
    response->set_shared_put_bytes(static_cast<int64_t>(shared_put_bytes_->value()));
  }
  response->set_epoch(options_.epoch);
  const KvTransport exported = cache_->segment().transport;
  response->set_pool_export(
      exported == KvTransport::kBytes ? "none" : std::string(KvTransportName(exported)));
  response->set_reserved_pages(reserved_pages());
  response->set_fetch_calls(calls_.fetch.load());
  response->set_put_calls(calls_.put.load());
  response->set_reserve_calls(calls_.reserve.load());
  response->set_commit_calls(calls_.commit.load());
  response->set_match_calls(calls_.match.load());
  response->set_release_calls(calls_.release.load());
  return grpc::Status::OK;
}

void KvStoreHandler::CountPutLease(const PrefixCache::InsertResult& inserted,
                                   const PeerIdentity& caller, const std::string& holder) {
  if (inserted.lease_id == PrefixCache::kNoLease) return;
  quotas_.AddLease(inserted.lease_id, holder.empty() ? CallerKey(caller) : holder, inserted.pages,
                   absl::Now());
}

// ---- the shared data plane ----

grpc::Status KvStoreHandler::CheckEpoch(uint64_t epoch, const char* what) const {
  if (epoch == options_.epoch) return grpc::Status::OK;
  return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                      absl::StrCat(what, ": epoch ", epoch, " is not the store's ", options_.epoch,
                                   " (the store restarted: connect again)"));
}

std::string KvStoreHandler::NoPoolReason(const std::string& host_id,
                                         const PeerIdentity& caller) const {
  const SharedSegment& segment = cache_->segment();
  if (segment.transport == KvTransport::kBytes) return "the store's pool is not exported";
  if (host_id != host_id_) return "the caller is on another host";
  if (!caller.authenticated) return "";
  for (const std::string& name : options_.pool_identities) {
    if (caller.HasName(name)) return "";
  }
  return absl::StrCat("'", caller.name, "' is not one of the store's --pool_identities");
}

grpc::Status KvStoreHandler::Connect(const v1::ConnectRequest& request, const PeerIdentity& caller,
                                     v1::ConnectResponse* response) {
  if (grpc::Status bad = CheckCaller(caller); !bad.ok()) return bad;
  response->set_epoch(options_.epoch);
  response->set_host_id(host_id_);
  *response->mutable_layout() = layout_proto_;
  response->set_reservation_ttl_ms(absl::ToInt64Milliseconds(options_.reservation_ttl));
  const std::string reason = NoPoolReason(request.host_id(), caller);
  if (!reason.empty()) {
    response->set_no_pool_reason(reason);
    return grpc::Status::OK;
  }
  const SharedSegment& segment = cache_->segment();
  v1::PoolExport* pool = response->mutable_pool();
  pool->set_transport(KvTransportToProto(segment.transport));
  pool->set_shm_name(segment.shm_name);
  pool->set_cuda_ipc_handle(segment.cuda_ipc_handle);
  pool->set_device_uuid(segment.device_uuid);
  pool->set_offset_bytes(segment.offset_bytes);
  pool->set_pool_bytes(segment.bytes);
  pool->set_num_pages(cache_->num_pages());
  const SharedSegment& index = cache_->index_segment();
  if (index.transport == KvTransport::kShm) {
    pool->set_index_shm_name(index.shm_name);
    pool->set_index_offset_bytes(index.offset_bytes);
    pool->set_index_words(cache_->index_words());
  }
  return grpc::Status::OK;
}

int64_t KvStoreHandler::reserved_pages() const {
  absl::MutexLock lock(&reservations_mu_);
  return reserved_pages_;
}

int64_t KvStoreHandler::ReapExpiredLeases() {
  const absl::Time start = absl::Now();
  CancelIdlePuts(start);
  std::vector<int32_t> expired;
  {
    absl::MutexLock lock(&reservations_mu_);
    const absl::Time now = absl::Now();
    for (auto it = reservations_.begin(); it != reservations_.end();) {
      auto here = it++;
      if (here->second.deadline > now) continue;
      expired.insert(expired.end(), here->second.pages.begin(), here->second.pages.end());
      reserved_pages_ -= static_cast<int64_t>(here->second.pages.size());
      quotas_.EndReserve(here->second.quota_key, static_cast<int64_t>(here->second.pages.size()));
      reservations_.erase(here);
    }
  }
  if (!expired.empty()) cache_->FreePages(expired).IgnoreError();
  const int64_t reaped = cache_->ReapExpiredLeases();
  // The cache reaped (at least) every lease idle since before start - ttl.
  const absl::Duration ttl = cache_->options().lease_ttl;
  if (ttl != absl::InfiniteDuration()) quotas_.ReapIdleLeases(start - ttl);
  return reaped;
}

int64_t KvStoreHandler::CancelIdlePuts(absl::Time now) {
  const int64_t idle_since = absl::ToUnixNanos(now - options_.put_idle_timeout);
  int64_t cancelled = 0;
  absl::MutexLock lock(&puts_mu_);
  for (PutSession* session : puts_) {
    if (session->last_message_ns_.load() > idle_since || session->idled_.exchange(true)) continue;
    ++cancelled;
    if (session->cancel_) session->cancel_();
  }
  return cancelled;
}

// ---- Put ----

KvStoreHandler::PutSession::PutSession(KvStoreHandler* handler, const PeerIdentity& caller)
    : handler_(handler), caller_(caller), last_message_ns_(absl::GetCurrentTimeNanos()) {
  absl::MutexLock lock(&handler_->puts_mu_);
  handler_->puts_.insert(this);
}

void KvStoreHandler::PutSession::SetCancel(std::function<void()> cancel) {
  absl::MutexLock lock(&handler_->puts_mu_);
  cancel_ = std::move(cancel);
}

KvStoreHandler::PutSession::~PutSession() {
  {
    absl::MutexLock lock(&handler_->puts_mu_);
    handler_->puts_.erase(this);
  }
  if (counted_) handler_->quotas_.EndPut(CallerKey(caller_), quota_bytes_);
  handler_->put_bytes_in_flight_.fetch_sub(expected_bytes_);
  if (!reserved_.empty()) handler_->cache_->FreePages(reserved_).IgnoreError();
}

grpc::Status KvStoreHandler::PutSession::OnHeader(const v1::PutHeader& header) {
  KvStoreHandler& h = *handler_;
  if (grpc::Status bad = CheckCaller(caller_); !bad.ok()) return bad;
  if (grpc::Status denied = h.CheckWriter(caller_); !denied.ok()) return denied;
  if (absl::Status bad = ValidateCacheSalt(header.cache_salt()); !bad.ok()) {
    return ToGrpcStatus(bad);
  }
  if (static_cast<int64_t>(header.lease_holder().size()) > kMaxLeaseHolderBytes) {
    return Invalid(absl::StrCat("Put: lease_holder longer than ", kMaxLeaseHolderBytes, " bytes"));
  }
  cache_salt_ = header.cache_salt();
  lease_holder_ = header.lease_holder();
  answer_pages_ =
      header.epoch() == h.options_.epoch && h.cache_->segment().transport != KvTransport::kBytes;
  if (absl::Status over =
          h.quotas_.CheckLease(lease_holder_.empty() ? CallerKey(caller_) : lease_holder_);
      !over.ok()) {
    return Refuse(header, absl::ResourceExhaustedError(absl::StrCat("Put: ", over.message())));
  }
  if (absl::Status other = CheckSameModel("Put", "the writer", header.layout().model_fingerprint(),
                                          h.options_.model_fingerprint);
      !other.ok()) {
    return Refuse(header, other);  // a commit's reservation is freed at once
  }
  absl::StatusOr<PageLayout> layout = KvLayoutFromProto(header.layout());
  if (!layout.ok()) return Invalid(absl::StrCat("Put: ", layout.status().message()));
  if (*layout != h.layout_) {
    return Invalid(absl::StrCat("Put: layout ", layout->ToString(), " is not the store's ",
                                h.layout_.ToString()));
  }
  if (grpc::Status bad = h.CheckTokens(header.tokens()); !bad.ok()) return bad;
  const int64_t ps = h.layout_.page_size;
  const int64_t n = header.tokens_size();
  const int64_t base = header.base_tokens();
  if (n == 0 || n % ps != 0) {
    return Invalid(
        absl::StrCat("Put: ", n, " tokens is not a positive multiple of page_size ", ps));
  }
  if (base < 0 || base > n || base % ps != 0) {
    return Invalid(
        absl::StrCat("Put: base_tokens ", base, " is not a page multiple in [0, ", n, "]"));
  }
  if ((base > 0) != (header.base_lease_id() != PrefixCache::kNoLease)) {
    return Invalid("Put: base_lease_id must be set exactly when base_tokens > 0");
  }
  base_lease_id_ = header.base_lease_id();
  base_pages_ = base / ps;
  if (base > 0) {
    if (grpc::Status bad = BasePages(nullptr); !bad.ok()) return bad;
  }
  new_pages_ = (n - base) / ps;
  const bool commit = header.reservation_id() != 0;
  if (!commit && new_pages_ > h.cache_->num_pages()) {
    return grpc::Status(
        grpc::StatusCode::RESOURCE_EXHAUSTED,
        absl::StrCat("Put: ", new_pages_, " pages, more than the pool's ", h.cache_->num_pages()));
  }
  // The bytes wait here until the stream ends; pages are taken only then,
  // so a stream that stalls holds memory under a bound, never pages. A
  // commit's pages were reserved and written in place: it buffers nothing.
  const int64_t bytes = commit ? 0 : new_pages_ * h.bytes_per_page_;
  // The caller's share first, then the store's bound over all callers.
  if (absl::Status over = h.quotas_.StartPut(CallerKey(caller_), bytes); !over.ok()) {
    return Refuse(header, over);
  }
  counted_ = true;
  quota_bytes_ = bytes;
  if (commit) return OnCommitHeader(header);
  if (h.put_bytes_in_flight_.fetch_add(bytes) + bytes > h.options_.max_put_buffer_bytes) {
    h.put_bytes_in_flight_.fetch_sub(bytes);
    return grpc::Status(
        grpc::StatusCode::RESOURCE_EXHAUSTED,
        absl::StrCat("Put: ", bytes, " bytes would pass the store's ",
                     h.options_.max_put_buffer_bytes, "-byte bound on Put streams in flight"));
  }
  expected_bytes_ = bytes;
  tokens_.assign(header.tokens().begin(), header.tokens().end());
  bytes_.reserve(expected_bytes_);
  have_header_ = true;
  return grpc::Status::OK;
}

grpc::Status KvStoreHandler::PutSession::OnCommitHeader(const v1::PutHeader& header) {
  KvStoreHandler& h = *handler_;
  if (grpc::Status stale = h.CheckEpoch(header.epoch(), "Put"); !stale.ok()) return stale;
  absl::StatusOr<std::vector<int32_t>> pages = h.TakeReservation(header.reservation_id(), caller_);
  if (!pages.ok()) return ToGrpcStatus(pages.status());
  reserved_ = *std::move(pages);  // freed by the destructor unless inserted
  if (static_cast<int64_t>(reserved_.size()) != new_pages_) {
    return Invalid(absl::StrCat("Put: reservation ", header.reservation_id(), " holds ",
                                reserved_.size(), " pages, not the ", new_pages_, " new ones"));
  }
  tokens_.assign(header.tokens().begin(), header.tokens().end());
  have_header_ = true;
  return grpc::Status::OK;
}

grpc::Status KvStoreHandler::PutSession::Refuse(const v1::PutHeader& header,
                                                const absl::Status& over) {
  // A refused commit hands its reservation's pages back now rather than at
  // the reservation's expiry (the destructor frees reserved_).
  if (header.reservation_id() != 0 && reserved_.empty()) {
    absl::StatusOr<std::vector<int32_t>> pages =
        handler_->TakeReservation(header.reservation_id(), caller_);
    if (pages.ok()) reserved_ = *std::move(pages);
  }
  return ToGrpcStatus(over);
}

grpc::Status KvStoreHandler::PutSession::BasePages(std::vector<int32_t>* pages) const {
  auto leased = handler_->cache_->LeasedPages(base_lease_id_, caller_.name);
  if (!leased.ok()) return ToGrpcStatus(leased.status());
  if (static_cast<int64_t>(leased->size()) < base_pages_) {
    return Invalid(absl::StrCat("Put: base lease pins ", leased->size(), " pages, fewer than the ",
                                base_pages_, " of base_tokens"));
  }
  if (pages != nullptr) pages->assign(leased->begin(), leased->begin() + base_pages_);
  return grpc::Status::OK;
}

void KvStoreHandler::PutSession::AnswerPages(v1::PutResponse* response) const {
  if (!answer_pages_ || response->lease_id() == PrefixCache::kNoLease) return;
  auto leased = handler_->cache_->LeasedPages(response->lease_id(), caller_.name);
  if (!leased.ok()) return;  // the reader Fetches instead
  response->mutable_shared()->set_epoch(handler_->options_.epoch);
  response->mutable_shared()->mutable_pages()->Add(leased->begin(), leased->end());
}

grpc::Status KvStoreHandler::PutSession::OnMessage(const v1::PutRequest& message) {
  last_message_ns_.store(absl::GetCurrentTimeNanos());
  if (message.has_header()) {
    if (have_header_) return Invalid("Put: a second header");
    return OnHeader(message.header());
  }
  if (!message.has_chunk()) return Invalid("Put: empty message");
  if (!have_header_) return Invalid("Put: page bytes before the header");
  if (!reserved_.empty()) return Invalid("Put: page bytes after a reservation's commit");
  const v1::PageChunk& chunk = message.chunk();
  if (chunk.offset() != bytes_.size()) {
    return Invalid(
        absl::StrCat("Put: chunk at offset ", chunk.offset(), ", expected ", bytes_.size()));
  }
  if (static_cast<int64_t>(bytes_.size() + chunk.data().size()) > expected_bytes_) {
    return Invalid(
        absl::StrCat("Put: more than the ", expected_bytes_, " bytes of ", new_pages_, " pages"));
  }
  bytes_.append(chunk.data());
  return grpc::Status::OK;
}

grpc::Status KvStoreHandler::PutSession::Finish(v1::PutResponse* response) {
  KvStoreHandler& h = *handler_;
  if (idled_.load()) {
    return grpc::Status(
        grpc::StatusCode::DEADLINE_EXCEEDED,
        absl::StrCat("Put: nothing arrived for ", absl::FormatDuration(h.options_.put_idle_timeout),
                     " (the store's --put_idle_timeout_s): stream cancelled"));
  }
  if (!have_header_) return Invalid("Put: no header");
  if (static_cast<int64_t>(bytes_.size()) != expected_bytes_) {
    return Invalid(
        absl::StrCat("Put: got ", bytes_.size(), " of ", expected_bytes_, " page bytes"));
  }
  std::vector<int32_t> pages;
  if (base_pages_ > 0) {
    if (grpc::Status gone = BasePages(&pages); !gone.ok()) {
      return grpc::Status(
          grpc::StatusCode::ABORTED,
          absl::StrCat("Put: the base lease ended during the stream: ", gone.error_message()));
    }
  }
  if (!reserved_.empty()) return FinishCommit(std::move(pages), response);
  auto allocated = h.cache_->AllocatePages(new_pages_);
  if (!allocated.ok()) return ToGrpcStatus(allocated.status());
  // Caller-held until inserted; freed if anything below fails.
  absl::Cleanup free_pages = [&] { h.cache_->FreePages(*allocated).IgnoreError(); };
  if (new_pages_ > 0) {
    absl::StatusOr<torch::Tensor> staged = PagesFromBytes(h.layout_, bytes_);
    if (!staged.ok()) return ToGrpcStatus(staged.status());
    // Writing caller-held pages needs no lock (see PrefixCache).
    absl::Status written = WritePages(h.cache_->storage(), *allocated, *staged);
    if (!written.ok()) return ToGrpcStatus(written);
    // Peers that map a device pool read it once the tree publishes it.
    WaitForDevice(h.cache_->storage().device());
  }
  pages.insert(pages.end(), allocated->begin(), allocated->end());
  auto inserted = h.cache_->Insert(tokens_, pages, cache_salt_, caller_.name, lease_holder_);
  if (!inserted.ok()) return ToGrpcStatus(inserted.status());
  std::move(free_pages).Cancel();  // adopted (or freed as duplicates) by the tree
  if (h.put_bytes_ != nullptr) h.put_bytes_->Increment(static_cast<double>(bytes_.size()));
  h.CountPutLease(*inserted, caller_, lease_holder_);
  response->set_lease_id(inserted->lease_id);
  response->set_cached_tokens(static_cast<int64_t>(tokens_.size()));
  response->set_inserted_tokens(inserted->inserted_tokens);
  AnswerPages(response);
  return grpc::Status::OK;
}

grpc::Status KvStoreHandler::PutSession::FinishCommit(std::vector<int32_t> pages,
                                                      v1::PutResponse* response) {
  KvStoreHandler& h = *handler_;
  pages.insert(pages.end(), reserved_.begin(), reserved_.end());
  auto inserted = h.cache_->Insert(tokens_, pages, cache_salt_, caller_.name, lease_holder_);
  if (!inserted.ok()) return ToGrpcStatus(inserted.status());
  const int64_t bytes = static_cast<int64_t>(reserved_.size()) * h.bytes_per_page_;
  reserved_.clear();  // adopted (or freed as duplicates) by the tree
  if (h.shared_put_bytes_ != nullptr) h.shared_put_bytes_->Increment(static_cast<double>(bytes));
  h.CountPutLease(*inserted, caller_, lease_holder_);
  response->set_lease_id(inserted->lease_id);
  response->set_cached_tokens(static_cast<int64_t>(tokens_.size()));
  response->set_inserted_tokens(inserted->inserted_tokens);
  AnswerPages(response);
  return grpc::Status::OK;
}

// ---- Fetch ----

grpc::Status KvStoreHandler::StartFetch(const v1::FetchRequest& request, const PeerIdentity& caller,
                                        std::unique_ptr<FetchSession>* session) {
  calls_.fetch.fetch_add(1);
  if (grpc::Status bad = CheckCaller(caller); !bad.ok()) return bad;
  const bool shared = request.transport() != v1::TRANSPORT_BYTES;
  if (shared) {
    if (request.transport() != KvTransportToProto(cache_->segment().transport)) {
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                          absl::StrCat("Fetch: the pool is not exported as ",
                                       v1::Transport_Name(request.transport())));
    }
    if (grpc::Status stale = CheckEpoch(request.epoch(), "Fetch"); !stale.ok()) return stale;
  }
  if (request.max_chunk_bytes() < 0) return Invalid("Fetch: negative max_chunk_bytes");
  if (request.lease_id() == PrefixCache::kNoLease) return Invalid("Fetch: lease_id 0");
  auto pages = cache_->LeasedPages(request.lease_id(), caller.name);
  if (!pages.ok()) return ToGrpcStatus(pages.status());
  cache_->RenewLease(request.lease_id(), caller.name).IgnoreError();
  quotas_.RenewLease(request.lease_id(), absl::Now());
  auto s = std::unique_ptr<FetchSession>(new FetchSession());
  const torch::Tensor& storage = cache_->storage();
  if (shared) {
    s->shared_ = true;
    s->epoch_ = options_.epoch;
    s->pages_ = *pages;
    s->header_.set_transport(request.transport());
  } else if (storage.is_cpu()) {
    // Straight from the pool: leased pages are read-only while the lease lives.
    s->cache_ = cache_;
    s->quotas_ = &quotas_;
    s->lease_id_ = request.lease_id();
    s->caller_ = caller.name;
    s->pages_ = *pages;
  } else {
    absl::StatusOr<torch::Tensor> gathered = ReadPages(storage, *pages, torch::kCPU);
    if (!gathered.ok()) return ToGrpcStatus(gathered.status());
    s->gathered_ = *std::move(gathered);
  }
  s->layout_ = layout_;
  *s->header_.mutable_layout() = layout_proto_;
  s->header_.set_pages(static_cast<int64_t>(pages->size()));
  s->header_.set_tokens(static_cast<int64_t>(pages->size()) * layout_.page_size);
  s->header_.set_total_bytes(static_cast<int64_t>(pages->size()) * bytes_per_page_);
  s->chunk_bytes_ = request.max_chunk_bytes() == 0
                        ? options_.max_chunk_bytes
                        : std::min(request.max_chunk_bytes(), options_.max_chunk_bytes);
  Counter* counter = shared ? shared_fetched_bytes_ : fetched_bytes_;
  if (counter != nullptr) counter->Increment(static_cast<double>(s->header_.total_bytes()));
  *session = std::move(s);
  return grpc::Status::OK;
}

bool KvStoreHandler::FetchSession::Next(v1::FetchResponse* message) {
  message->Clear();
  if (!header_sent_) {
    header_sent_ = true;
    *message->mutable_header() = header_;
    return true;
  }
  if (shared_) {
    if (offset_ > 0) return false;
    offset_ = header_.total_bytes();
    message->mutable_shared()->set_epoch(epoch_);
    message->mutable_shared()->mutable_pages()->Add(pages_.begin(), pages_.end());
    return true;
  }
  const int64_t total = header_.total_bytes();
  if (offset_ >= total) return false;
  const int64_t n = std::min(chunk_bytes_, total - offset_);
  message->mutable_chunk()->set_offset(offset_);
  std::string* data = message->mutable_chunk()->mutable_data();
  if (cache_ == nullptr) {
    data->assign(static_cast<const char*>(gathered_.data_ptr()) + offset_, n);
  } else {
    data->resize(n);
    CopyPoolBytes(cache_->storage(), layout_, pages_, offset_, n, data->data());
  }
  offset_ += n;
  return true;
}

grpc::Status KvStoreHandler::FetchSession::Done() const {
  if (cache_ == nullptr) return grpc::Status::OK;
  if (!cache_->RenewLease(lease_id_, caller_).ok()) {
    return grpc::Status(grpc::StatusCode::ABORTED,
                        "Fetch: the lease was released while its pages streamed");
  }
  quotas_->RenewLease(lease_id_, absl::Now());  // as the cache: renewed when the stream ends
  return grpc::Status::OK;
}

}  // namespace nanoserve
