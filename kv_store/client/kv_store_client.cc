#include "kv_store/client/kv_store_client.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "base/model_identity.h"
#include "base/server_runner.h"
#include "base/status.h"
#include "kv_store/client/kv_wire.h"

namespace nanoserve {
namespace {

// The most queries of one MatchBatch and lease ids of one Release a store
// takes (kv_store.proto).
constexpr size_t kMaxMatchBatch = 1024;
constexpr size_t kMaxReleaseBatch = 4096;

// How long a decision to stream bytes (the store offered no pool) stands
// before the client asks again.
constexpr absl::Duration kRetryConnectAfter = absl::Seconds(5);

}  // namespace

absl::StatusOr<KvStoreClientOptions::Transport> ParseKvTransport(absl::string_view name) {
  using T = KvStoreClientOptions::Transport;
  if (name == "auto") return T::kAuto;
  if (name == "bytes") return T::kBytes;
  if (name == "shm") return T::kShm;
  if (name == "cuda_ipc") return T::kCudaIpc;
  return absl::InvalidArgumentError(
      absl::StrCat("kv transport '", name, "' is not auto, bytes, shm or cuda_ipc"));
}

KvStoreClient::KvStoreClient(const KvStoreClientOptions& options)
    : options_(options),
      breaker_(absl::StrCat("kv store ", options.target), options.breaker),
      stub_(v1::KvStore::NewStub(
          MakeChannel(options.target, options.max_message_bytes, options.credentials))) {}

absl::Status KvStoreClient::Finished(const grpc::Status& status, const char* what) {
  absl::Status result = FromGrpcStatus(status, what);
  breaker_.Record(result);
  return result;
}

absl::Status KvStoreClient::CheckModel(const v1::KvLayout& layout, const char* what) {
  absl::Status other = CheckSameModel(what, absl::StrCat("the kv store at ", options_.target),
                                      layout.model_fingerprint(), options_.model_fingerprint);
  if (!other.ok() && !model_mismatch_logged_.exchange(true)) {
    std::fprintf(stderr, "%s; its K/V are not used, prompts are computed here\n",
                 std::string(other.message()).c_str());
  }
  return other;
}

v1::KvLayout KvStoreClient::LayoutProto(const PageLayout& layout) const {
  v1::KvLayout proto = KvLayoutToProto(layout);
  proto.set_model_fingerprint(options_.model_fingerprint);
  return proto;
}

void KvStoreClient::SetDeadline(grpc::ClientContext* context) const {
  context->set_deadline(std::chrono::system_clock::now() +
                        absl::ToChronoMilliseconds(options_.timeout));
}

absl::StatusOr<KvStoreClient::Match> KvStoreClient::MatchPrefix(absl::Span<const int32_t> tokens,
                                                                absl::string_view cache_salt) {
  absl::StatusOr<std::vector<Match>> matches = MatchPrefixes({{tokens, cache_salt}});
  if (!matches.ok()) return matches.status();
  return std::move(matches->front());
}

absl::StatusOr<std::vector<KvStoreClient::Match>> KvStoreClient::MatchPrefixes(
    absl::Span<const MatchQuery> queries) {
  if (queries.empty()) return std::vector<Match>();
  // The store's bound on one call; one query a call to a store from before
  // MatchBatch.
  const size_t part = store_lacks_batches_.load() ? 1 : kMaxMatchBatch;
  if (queries.size() > part) return MatchInParts(queries, part);
  if (absl::Status refused = breaker_.Allow(); !refused.ok()) return refused;
  uint64_t epoch = 0;
  {
    absl::MutexLock lock(&mu_);
    if (pool_ != nullptr) epoch = pool_->epoch;
  }
  auto query = [&](const MatchQuery& q, v1::MatchRequest* request) {
    request->mutable_tokens()->Add(q.tokens.begin(), q.tokens.end());
    request->set_cache_salt(std::string(q.cache_salt));
    request->set_epoch(epoch);
  };
  grpc::ClientContext context;
  SetDeadline(&context);
  std::vector<v1::MatchResponse> responses(1);
  if (queries.size() == 1) {  // a lone Match, as a store without MatchBatch knows
    v1::MatchRequest request;
    query(queries[0], &request);
    grpc::Status status = stub_->Match(&context, request, &responses[0]);
    if (absl::Status failed = Finished(status, "kv store Match"); !failed.ok()) return failed;
  } else {
    v1::MatchBatchRequest request;
    for (const MatchQuery& q : queries) query(q, request.add_queries());
    v1::MatchBatchResponse response;
    grpc::Status status = stub_->MatchBatch(&context, request, &response);
    if (status.error_code() == grpc::StatusCode::UNIMPLEMENTED) {
      // A store from before MatchBatch (and the Release of many): one call
      // a query and a lease from now on.
      store_lacks_batches_.store(true);
      return MatchInParts(queries, 1);
    }
    if (absl::Status failed = Finished(status, "kv store MatchBatch"); !failed.ok()) return failed;
    responses.assign(response.matches().begin(), response.matches().end());
  }
  std::vector<uint64_t> leases;
  for (const v1::MatchResponse& r : responses) leases.push_back(r.lease_id());
  absl::Cleanup release = [&] { Release(leases).IgnoreError(); };
  if (responses.size() != queries.size()) {
    return absl::InternalError(absl::StrCat("kv store MatchBatch: ", responses.size(),
                                            " answers to ", queries.size(), " queries"));
  }
  std::vector<Match> matches;
  for (const v1::MatchResponse& response : responses) {
    if (absl::Status other = CheckModel(response.layout(), "kv store Match"); !other.ok()) {
      return other;
    }
    absl::StatusOr<PageLayout> layout = KvLayoutFromProto(response.layout());
    if (!layout.ok()) {
      return absl::InternalError(absl::StrCat("kv store Match: ", layout.status().message()));
    }
    Match match{response.matched_tokens(), response.lease_id(), *layout};
    if (response.has_shared()) {
      match.pool_epoch = response.shared().epoch();
      match.pool_pages.assign(response.shared().pages().begin(), response.shared().pages().end());
    }
    matches.push_back(std::move(match));
  }
  std::move(release).Cancel();
  return matches;
}

v1::PutHeader KvStoreClient::PutHeaderProto(absl::Span<const int32_t> tokens,
                                            uint64_t base_lease_id, int64_t base_tokens,
                                            const PageLayout& layout, const PutScope& scope) const {
  v1::PutHeader header;
  header.mutable_tokens()->Add(tokens.begin(), tokens.end());
  header.set_base_lease_id(base_lease_id);
  header.set_base_tokens(base_tokens);
  *header.mutable_layout() = LayoutProto(layout);
  header.set_cache_salt(scope.cache_salt);
  header.set_lease_holder(scope.lease_holder);
  header.set_epoch(scope.pool_epoch);
  return header;
}

absl::StatusOr<v1::PutResponse> KvStoreClient::Put(absl::Span<const int32_t> tokens,
                                                   uint64_t base_lease_id, int64_t base_tokens,
                                                   const torch::Tensor& pages,
                                                   const PageLayout& layout,
                                                   const PutScope& scope) {
  const int64_t n_pages = (static_cast<int64_t>(tokens.size()) - base_tokens) / layout.page_size;
  if (!pages.is_cpu() || !pages.is_contiguous() || !pages.sizes().equals(layout.shape(n_pages)) ||
      pages.scalar_type() != layout.dtype) {
    return absl::InvalidArgumentError(absl::StrCat("kv store Put: pages of shape ",
                                                   c10::str(pages.sizes()), " are not ", n_pages,
                                                   " CPU pages of ", layout.ToString()));
  }
  if (absl::Status refused = breaker_.Allow(); !refused.ok()) return refused;
  grpc::ClientContext context;
  SetDeadline(&context);
  v1::PutResponse response;
  std::unique_ptr<grpc::ClientWriter<v1::PutRequest>> writer = stub_->Put(&context, &response);
  v1::PutRequest header;
  *header.mutable_header() = PutHeaderProto(tokens, base_lease_id, base_tokens, layout, scope);
  bool ok = writer->Write(header);
  const char* data = static_cast<const char*>(pages.data_ptr());
  const int64_t total = pages.numel() * pages.element_size();
  for (int64_t offset = 0; ok && offset < total; offset += options_.chunk_bytes) {
    v1::PutRequest chunk;
    chunk.mutable_chunk()->set_offset(offset);
    chunk.mutable_chunk()->set_data(data + offset, std::min(options_.chunk_bytes, total - offset));
    ok = writer->Write(chunk);
  }
  writer->WritesDone();
  grpc::Status status = writer->Finish();
  if (absl::Status failed = Finished(status, "kv store Put"); !failed.ok()) return failed;
  return response;
}

absl::StatusOr<KvStoreClient::Fetched> KvStoreClient::Fetch(uint64_t lease_id) {
  if (absl::Status refused = breaker_.Allow(); !refused.ok()) return refused;
  grpc::ClientContext context;
  SetDeadline(&context);
  v1::FetchRequest request;
  request.set_lease_id(lease_id);
  request.set_transport(v1::TRANSPORT_BYTES);
  request.set_max_chunk_bytes(options_.chunk_bytes);
  std::unique_ptr<grpc::ClientReader<v1::FetchResponse>> reader = stub_->Fetch(&context, request);
  v1::FetchResponse message;
  v1::FetchHeader header;
  PageLayout layout;
  bool have_header = false;
  torch::Tensor pages;  // a run of pages: the chunks land here directly
  char* data = nullptr;
  int64_t received = 0;
  absl::Status bad;
  while (reader->Read(&message)) {
    if (message.has_header() && !have_header) {
      header = message.header();
      bad = CheckModel(header.layout(), "kv store Fetch");
      absl::StatusOr<PageLayout> parsed = KvLayoutFromProto(header.layout());
      // pages * bytes_per_page must not overflow: a header claiming more
      // pages than int64 bytes can hold is malformed, not a wrapped size.
      int64_t claimed_bytes = 0;
      have_header =
          bad.ok() && parsed.ok() && header.pages() >= 0 &&
          !__builtin_mul_overflow(header.pages(), parsed->bytes_per_page(), &claimed_bytes) &&
          header.total_bytes() == claimed_bytes;
      absl::StatusOr<torch::Tensor> allocated;
      if (have_header) {
        layout = *parsed;
        allocated = EmptyPages(layout, header.pages(), torch::kCPU);
        have_header = allocated.ok();
      }
      if (!have_header) {
        if (bad.ok()) bad = absl::InternalError("kv store Fetch: malformed header");
      } else {
        pages = *std::move(allocated);
        data = static_cast<char*>(pages.data_ptr());
      }
    } else if (message.has_chunk() && have_header &&
               static_cast<int64_t>(message.chunk().offset()) == received &&
               received + static_cast<int64_t>(message.chunk().data().size()) <=
                   header.total_bytes()) {
      std::memcpy(data + received, message.chunk().data().data(), message.chunk().data().size());
      received += static_cast<int64_t>(message.chunk().data().size());
    } else if (bad.ok()) {
      bad = absl::InternalError("kv store Fetch: out-of-order or unexpected message");
    }
    if (!bad.ok()) context.TryCancel();
  }
  grpc::Status status = reader->Finish();
  if (!bad.ok()) return bad;
  if (absl::Status failed = Finished(status, "kv store Fetch"); !failed.ok()) return failed;
  if (!have_header || received != header.total_bytes()) {
    return absl::InternalError("kv store Fetch: stream ended early");
  }
  Fetched fetched;
  fetched.pages = std::move(pages);
  fetched.layout = layout;
  fetched.tokens = header.tokens();
  fetched.bytes = header.total_bytes();
  return fetched;
}

absl::Status KvStoreClient::Release(uint64_t lease_id) {
  if (absl::Status refused = breaker_.Allow(); !refused.ok()) return refused;
  grpc::ClientContext context;
  SetDeadline(&context);
  v1::ReleaseRequest request;
  request.set_lease_id(lease_id);
  v1::ReleaseResponse response;
  return Finished(stub_->Release(&context, request, &response), "kv store Release");
}

absl::StatusOr<std::vector<KvStoreClient::Match>> KvStoreClient::MatchInParts(
    absl::Span<const MatchQuery> queries, size_t part) {
  std::vector<Match> all;
  for (size_t begin = 0; begin < queries.size(); begin += part) {
    absl::StatusOr<std::vector<Match>> matched = MatchPrefixes(queries.subspan(begin, part));
    if (!matched.ok()) {
      std::vector<uint64_t> taken;
      for (const Match& m : all) taken.push_back(m.lease_id);
      Release(taken).IgnoreError();
      return matched.status();
    }
    for (Match& m : *matched) all.push_back(std::move(m));
  }
  return all;
}

absl::Status KvStoreClient::Release(absl::Span<const uint64_t> lease_ids) {
  std::vector<uint64_t> ids;
  for (uint64_t id : lease_ids) {
    if (id != 0) ids.push_back(id);
  }
  if (ids.empty()) return absl::OkStatus();
  if (ids.size() == 1) return Release(ids[0]);
  // The store's bound on one call; one lease a call to a store from before
  // the Release of many (it knows lease_id alone).
  const size_t part = store_lacks_batches_.load() ? 1 : kMaxReleaseBatch;
  if (ids.size() > part) {
    absl::Status first = absl::OkStatus();
    for (size_t begin = 0; begin < ids.size(); begin += part) {
      absl::Status released = Release(absl::MakeConstSpan(ids).subspan(begin, part));
      if (first.ok()) first = released;
    }
    return first;
  }
  v1::ReleaseRequest request;
  request.mutable_lease_ids()->Add(ids.begin(), ids.end());
  if (absl::Status refused = breaker_.Allow(); !refused.ok()) return refused;
  grpc::ClientContext context;
  SetDeadline(&context);
  v1::ReleaseResponse response;
  return Finished(stub_->Release(&context, request, &response), "kv store Release");
}

absl::StatusOr<std::vector<uint64_t>> KvStoreClient::Renew(const std::vector<uint64_t>& lease_ids) {
  if (absl::Status refused = breaker_.Allow(); !refused.ok()) return refused;
  grpc::ClientContext context;
  SetDeadline(&context);
  v1::RenewLeaseRequest request;
  request.mutable_lease_ids()->Add(lease_ids.begin(), lease_ids.end());
  v1::RenewLeaseResponse response;
  grpc::Status status = stub_->RenewLease(&context, request, &response);
  if (absl::Status failed = Finished(status, "kv store RenewLease"); !failed.ok()) return failed;
  return std::vector<uint64_t>(response.unknown_lease_ids().begin(),
                               response.unknown_lease_ids().end());
}

absl::StatusOr<v1::StatsResponse> KvStoreClient::Stats() {
  if (absl::Status refused = breaker_.Allow(); !refused.ok()) return refused;
  grpc::ClientContext context;
  SetDeadline(&context);
  v1::StatsResponse response;
  grpc::Status status = stub_->Stats(&context, v1::StatsRequest(), &response);
  if (absl::Status failed = Finished(status, "kv store Stats"); !failed.ok()) return failed;
  return response;
}

// ---- the shared data plane ----

absl::StatusOr<std::shared_ptr<const KvStoreClient::MappedPool>> KvStoreClient::Pool() {
  if (options_.transport == KvStoreClientOptions::Transport::kBytes) return nullptr;
  absl::MutexLock lock(&mu_);
  if (pool_ != nullptr) return pool_;
  if (connected_ && absl::Now() - decided_at_ < kRetryConnectAfter) {
    if (options_.transport != KvStoreClientOptions::Transport::kAuto) {
      return absl::FailedPreconditionError(no_pool_reason_);
    }
    return nullptr;
  }
  absl::StatusOr<std::shared_ptr<const MappedPool>> pool = ConnectAndMap();
  if (!pool.ok()) return pool.status();
  pool_ = *pool;
  if (pool_ == nullptr && options_.transport != KvStoreClientOptions::Transport::kAuto) {
    return absl::FailedPreconditionError(no_pool_reason_);
  }
  return pool_;
}

absl::StatusOr<std::shared_ptr<const KvStoreClient::MappedPool>> KvStoreClient::ConnectAndMap() {
  if (absl::Status refused = breaker_.Allow(); !refused.ok()) return refused;
  grpc::ClientContext context;
  SetDeadline(&context);
  v1::ConnectRequest request;
  request.set_host_id(HostId());
  v1::ConnectResponse response;
  grpc::Status status = stub_->Connect(&context, request, &response);
  absl::Status failed = Finished(status, "kv store Connect");
  if (!failed.ok() && failed.code() != absl::StatusCode::kUnimplemented) return failed;
  connected_ = true;
  decided_at_ = absl::Now();
  auto bytes = [&](std::string reason) -> std::shared_ptr<const MappedPool> {
    no_pool_reason_ = absl::StrCat("kv store ", options_.target, ": bytes (", reason, ")");
    std::fprintf(stderr, "%s\n", no_pool_reason_.c_str());
    return nullptr;
  };
  if (!failed.ok()) return bytes("the store has no data plane: an older version");
  if (absl::Status other = CheckModel(response.layout(), "kv store Connect"); !other.ok()) {
    connected_ = false;  // asked again next time: the store may be restarted with ours
    return other;
  }
  if (!response.has_pool()) return bytes(response.no_pool_reason());
  absl::StatusOr<PageLayout> layout = KvLayoutFromProto(response.layout());
  if (!layout.ok()) {
    return absl::InternalError(absl::StrCat("kv store Connect: ", layout.status().message()));
  }
  const v1::PoolExport& exported = response.pool();
  SharedSegment segment;
  segment.transport = KvTransportFromProto(exported.transport());
  using T = KvStoreClientOptions::Transport;
  if ((options_.transport == T::kShm && segment.transport != KvTransport::kShm) ||
      (options_.transport == T::kCudaIpc && segment.transport != KvTransport::kCudaIpc)) {
    return bytes(
        absl::StrCat("the store exports its pool as ", KvTransportName(segment.transport)));
  }
  segment.shm_name = exported.shm_name();
  segment.cuda_ipc_handle = exported.cuda_ipc_handle();
  segment.device_uuid = exported.device_uuid();
  segment.offset_bytes = exported.offset_bytes();
  segment.bytes = exported.pool_bytes();
  if (exported.num_pages() < 1) return bytes("the store exports an empty pool");
  absl::StatusOr<torch::Tensor> storage =
      MapExported(segment, layout->shape(exported.num_pages()), layout->dtype, options_.device,
                  response.epoch());
  if (!storage.ok()) return bytes(std::string(storage.status().message()));
  auto pool = std::make_shared<MappedPool>();
  pool->transport = segment.transport;
  pool->epoch = response.epoch();
  pool->layout = *layout;
  pool->storage = *std::move(storage);
  std::string index_note = "no page index";
  if (!exported.index_shm_name().empty() && exported.index_words() > 0) {
    SharedSegment index;
    index.transport = KvTransport::kShm;
    index.shm_name = exported.index_shm_name();
    index.offset_bytes = exported.index_offset_bytes();
    index.bytes = exported.index_words() * static_cast<int64_t>(sizeof(uint64_t));
    absl::StatusOr<torch::Tensor> words =
        MapExported(index, {exported.index_words()}, torch::kInt64, torch::Device(torch::kCPU),
                    response.epoch());
    if (words.ok()) {
      pool->page_index = *std::move(words);
      index_note = "its page index mapped";
    } else {
      index_note = absl::StrCat("no page index (", words.status().message(), ")");
    }
  }
  no_pool_reason_.clear();
  std::fprintf(stderr, "kv store %s: %s, %lld pages mapped (epoch %llx), %s\n",
               options_.target.c_str(), std::string(KvTransportName(pool->transport)).c_str(),
               static_cast<long long>(exported.num_pages()),
               static_cast<unsigned long long>(pool->epoch), index_note.c_str());
  return std::shared_ptr<const MappedPool>(std::move(pool));
}

std::string KvStoreClient::TransportDescription() const {
  absl::MutexLock lock(&mu_);
  if (pool_ != nullptr) return std::string(KvTransportName(pool_->transport));
  if (options_.transport == KvStoreClientOptions::Transport::kBytes) return "bytes (forced)";
  if (!connected_) return "not connected";
  return no_pool_reason_;
}

absl::Status KvStoreClient::FinishedShared(const grpc::Status& status, const char* what,
                                           uint64_t epoch) {
  absl::Status result = Finished(status, what);
  if (result.code() == absl::StatusCode::kFailedPrecondition) DropPool(epoch);
  return result;
}

void KvStoreClient::DropPool(uint64_t epoch) {
  // The store restarted (or stopped exporting): map again next time.
  absl::MutexLock lock(&mu_);
  if (pool_ != nullptr && pool_->epoch == epoch) {
    pool_ = nullptr;
    connected_ = false;
  }
}

absl::StatusOr<std::vector<int32_t>> KvStoreClient::FetchShared(const MappedPool& pool,
                                                                uint64_t lease_id,
                                                                int64_t* tokens) {
  if (absl::Status refused = breaker_.Allow(); !refused.ok()) return refused;
  grpc::ClientContext context;
  SetDeadline(&context);
  v1::FetchRequest request;
  request.set_lease_id(lease_id);
  request.set_transport(KvTransportToProto(pool.transport));
  request.set_epoch(pool.epoch);
  std::unique_ptr<grpc::ClientReader<v1::FetchResponse>> reader = stub_->Fetch(&context, request);
  v1::FetchResponse message;
  std::vector<int32_t> pages;
  int64_t header_pages = -1;
  bool have_pages = false;
  absl::Status other;  // the header's model, if not this client's
  while (reader->Read(&message)) {
    if (message.has_header() && header_pages < 0) {
      header_pages = message.header().pages();
      *tokens = message.header().tokens();
      if (other.ok()) other = CheckModel(message.header().layout(), "kv store Fetch");
    } else if (message.has_shared() && header_pages >= 0 && !have_pages) {
      pages.assign(message.shared().pages().begin(), message.shared().pages().end());
      have_pages = true;
    }
  }
  grpc::Status status = reader->Finish();
  if (absl::Status failed = FinishedShared(status, "kv store Fetch", pool.epoch); !failed.ok()) {
    return failed;
  }
  if (!other.ok()) return other;
  const int64_t num_pages = pool.storage.size(0);
  bool in_range = have_pages && static_cast<int64_t>(pages.size()) == header_pages &&
                  *tokens == header_pages * pool.layout.page_size;
  for (int32_t page : pages) in_range = in_range && page >= 0 && page < num_pages;
  if (!in_range) return absl::InternalError("kv store Fetch: malformed shared pages");
  return pages;
}

absl::StatusOr<KvStoreClient::Reserved> KvStoreClient::ReserveBatch(
    const MappedPool& pool, absl::Span<const int64_t> pages_per_row) {
  if (absl::Status refused = breaker_.Allow(); !refused.ok()) return refused;
  grpc::ClientContext context;
  SetDeadline(&context);
  v1::ReserveRequest request;
  request.mutable_batch()->Add(pages_per_row.begin(), pages_per_row.end());
  request.set_epoch(pool.epoch);
  v1::ReserveResponse response;
  grpc::Status status = stub_->Reserve(&context, request, &response);
  if (absl::Status failed = FinishedShared(status, "kv store Reserve", pool.epoch); !failed.ok()) {
    return failed;
  }
  bool valid = response.reservations_size() <= static_cast<int>(pages_per_row.size());
  Reserved reserved;
  for (int i = 0; valid && i < response.reservations_size(); ++i) {
    const v1::ReservedPages& r = response.reservations(i);
    valid = r.reservation_id() != 0 && r.pages_size() == pages_per_row[i];
    for (int32_t page : r.pages()) valid = valid && page >= 0 && page < pool.storage.size(0);
    reserved.granted.push_back({r.reservation_id(), {r.pages().begin(), r.pages().end()}});
  }
  if (!valid) return absl::InternalError("kv store Reserve: malformed reservations");
  reserved.refused = response.refused();
  return reserved;
}

absl::StatusOr<std::vector<absl::StatusOr<v1::PutResponse>>> KvStoreClient::CommitBatch(
    const MappedPool& pool, absl::Span<const CommitRow> rows,
    absl::Span<const uint64_t> abandoned) {
  if (absl::Status refused = breaker_.Allow(); !refused.ok()) return refused;
  grpc::ClientContext context;
  SetDeadline(&context);
  v1::CommitRequest request;
  for (const CommitRow& row : rows) {
    v1::PutHeader* h = request.add_headers();
    *h = PutHeaderProto(row.tokens, row.base_lease_id, row.base_tokens, pool.layout, row.scope);
    h->set_reservation_id(row.reservation_id);
    h->set_epoch(pool.epoch);
  }
  request.mutable_abandoned_reservation_ids()->Add(abandoned.begin(), abandoned.end());
  v1::CommitResponse response;
  grpc::Status status = stub_->Commit(&context, request, &response);
  if (absl::Status failed = FinishedShared(status, "kv store Commit", pool.epoch); !failed.ok()) {
    return failed;
  }
  if (response.results_size() != static_cast<int>(rows.size())) {
    return absl::InternalError("kv store Commit: not one result per row");
  }
  std::vector<absl::StatusOr<v1::PutResponse>> out;
  for (const v1::CommitResult& result : response.results()) {
    if (result.code() == 0) {
      out.push_back(result.response());
      continue;
    }
    const absl::Status row(static_cast<absl::StatusCode>(result.code()),
                           absl::StrCat("kv store Commit: ", result.message()));
    if (row.code() == absl::StatusCode::kFailedPrecondition) DropPool(pool.epoch);
    out.push_back(row);
  }
  return out;
}

}  // namespace nanoserve
