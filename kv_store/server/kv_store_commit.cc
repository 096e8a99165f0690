// KvStoreHandler's writes in place: Reserve (one reservation, or one per row
// of a batch) and Commit (several reservations' headers in one call).
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status.h"
#include "kv_cache/shared_memory.h"
#include "kv_store/server/kv_store_handler.h"

namespace nanoserve {
namespace {

// The most reservations one Reserve, and headers one Commit, may carry.
constexpr int kMaxBatchReservations = 1024;

grpc::Status InvalidWrite(const std::string& message) {
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, message);
}

}  // namespace

grpc::Status KvStoreHandler::Reserve(const v1::ReserveRequest& request, const PeerIdentity& caller,
                                     v1::ReserveResponse* response) {
  calls_.reserve.fetch_add(1);
  if (grpc::Status bad = CheckCaller(caller); !bad.ok()) return bad;
  if (grpc::Status denied = CheckWriter(caller); !denied.ok()) return denied;
  if (grpc::Status stale = CheckEpoch(request.epoch(), "Reserve"); !stale.ok()) return stale;
  if (cache_->segment().transport == KvTransport::kBytes) {
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                        "Reserve: the store's pool is not exported");
  }
  const bool batch = !request.batch().empty();
  if (batch && request.pages() != 0) return InvalidWrite("Reserve: both pages and batch set");
  if (request.batch_size() > kMaxBatchReservations) {
    return InvalidWrite(absl::StrCat("Reserve: ", request.batch_size(), " reservations; at most ",
                                     kMaxBatchReservations));
  }
  std::vector<int64_t> sizes(request.batch().begin(), request.batch().end());
  if (!batch) sizes.push_back(request.pages());
  for (int64_t pages : sizes) {
    if (pages < 1 || pages > cache_->num_pages()) {
      return InvalidWrite(
          absl::StrCat("Reserve: ", pages, " pages is not in [1, ", cache_->num_pages(), "]"));
    }
  }
  response->set_ttl_ms(absl::ToInt64Milliseconds(options_.reservation_ttl));
  const std::string key = CallerKey(caller);
  for (int64_t pages : sizes) {
    absl::StatusOr<v1::ReservedPages> reserved = ReserveOne(caller, key, pages);
    if (!reserved.ok()) {
      // Nothing granted: the call fails as one reservation would.
      if (response->reservations().empty()) return ToGrpcStatus(reserved.status());
      response->set_refused(std::string(reserved.status().message()));
      break;
    }
    if (!batch) {
      response->set_reservation_id(reserved->reservation_id());
      *response->mutable_pages() = reserved->pages();
      break;
    }
    *response->add_reservations() = *std::move(reserved);
  }
  return grpc::Status::OK;
}

absl::StatusOr<v1::ReservedPages> KvStoreHandler::ReserveOne(const PeerIdentity& caller,
                                                             const std::string& key,
                                                             int64_t pages) {
  // The caller's share first, then the store's bound over all callers
  // (options_.max_reserved_pages).
  if (absl::Status over = quotas_.StartReserve(key, pages); !over.ok()) return over;
  const int64_t max_pages = options_.max_reserved_pages;
  {
    absl::MutexLock lock(&reservations_mu_);
    if (max_pages > 0 && reserved_pages_ + pages > max_pages) {
      quotas_.EndReserve(key, pages);
      return absl::ResourceExhaustedError(absl::StrCat("Reserve: ", pages, " pages would pass the ",
                                                       max_pages,
                                                       " pages writers may hold uncommitted"));
    }
    reserved_pages_ += pages;
  }
  absl::StatusOr<std::vector<int32_t>> allocated = cache_->AllocatePages(pages);
  absl::MutexLock lock(&reservations_mu_);
  if (!allocated.ok()) {
    reserved_pages_ -= pages;
    quotas_.EndReserve(key, pages);
    return allocated.status();
  }
  uint64_t id = NewEpoch();
  while (id == 0 || reservations_.contains(id)) id = NewEpoch();
  v1::ReservedPages reserved;
  reserved.set_reservation_id(id);
  reserved.mutable_pages()->Add(allocated->begin(), allocated->end());
  reservations_[id] =
      Reservation{caller.name, key, *std::move(allocated), absl::Now() + options_.reservation_ttl};
  return reserved;
}

absl::StatusOr<std::vector<int32_t>> KvStoreHandler::TakeReservation(uint64_t id,
                                                                     const PeerIdentity& caller) {
  absl::MutexLock lock(&reservations_mu_);
  auto it = reservations_.find(id);
  if (it == reservations_.end() || it->second.caller != caller.name) {
    return absl::NotFoundError(absl::StrCat("Put: no reservation ", id, " (expired?)"));
  }
  std::vector<int32_t> pages = std::move(it->second.pages);
  reserved_pages_ -= static_cast<int64_t>(pages.size());
  quotas_.EndReserve(it->second.quota_key, static_cast<int64_t>(pages.size()));
  reservations_.erase(it);
  return pages;
}

grpc::Status KvStoreHandler::Commit(const v1::CommitRequest& request, const PeerIdentity& caller,
                                    v1::CommitResponse* response) {
  calls_.commit.fetch_add(1);
  if (grpc::Status bad = CheckCaller(caller); !bad.ok()) return bad;
  if (grpc::Status denied = CheckWriter(caller); !denied.ok()) return denied;
  if (request.headers_size() > kMaxBatchReservations ||
      request.abandoned_reservation_ids_size() > kMaxBatchReservations) {
    return InvalidWrite(absl::StrCat("Commit: more than ", kMaxBatchReservations,
                                     " headers or abandoned reservations"));
  }
  // Handed back first: their pages may serve the commits below.
  for (uint64_t id : request.abandoned_reservation_ids()) {
    absl::StatusOr<std::vector<int32_t>> pages = TakeReservation(id, caller);
    if (pages.ok()) cache_->FreePages(*pages).IgnoreError();
  }
  for (const v1::PutHeader& header : request.headers()) {
    v1::CommitResult* result = response->add_results();
    grpc::Status status = CommitOne(header, caller, result->mutable_response());
    if (!status.ok()) {
      result->clear_response();
      result->set_code(static_cast<int32_t>(status.error_code()));
      result->set_message(status.error_message());
    }
  }
  return grpc::Status::OK;
}

grpc::Status KvStoreHandler::CommitOne(const v1::PutHeader& header, const PeerIdentity& caller,
                                       v1::PutResponse* response) {
  if (header.reservation_id() == 0) return InvalidWrite("Commit: a header names no reservation");
  // A Put stream of the header alone: the same checks, quotas and leases,
  // and its reservation freed at once if anything fails.
  PutSession session(this, caller);
  v1::PutRequest message;
  *message.mutable_header() = header;
  if (grpc::Status status = session.OnMessage(message); !status.ok()) return status;
  return session.Finish(response);
}

}  // namespace nanoserve
