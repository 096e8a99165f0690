#include "kv_store/client/remote_prefix_store.h"

#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "base/torch_status.h"
#include "kv_store/client/kv_wire.h"

namespace nanoserve {

absl::StatusOr<PageLayout> RemotePrefixStore::Layout() {
  {
    absl::MutexLock lock(&mu_);
    if (layout_.has_value()) return *layout_;
  }
  absl::StatusOr<v1::StatsResponse> stats = client_->Stats();
  if (!stats.ok()) return stats.status();
  absl::StatusOr<PageLayout> layout = KvLayoutFromProto(stats->layout());
  if (!layout.ok())
    return absl::InternalError(absl::StrCat("kv store: ", layout.status().message()));
  absl::MutexLock lock(&mu_);
  layout_ = *layout;
  return *layout;
}

absl::StatusOr<PrefixStore::Match> RemotePrefixStore::MatchPrefix(absl::Span<const int32_t> tokens,
                                                                  absl::string_view cache_salt) {
  absl::StatusOr<KvStoreClient::Match> match = client_->MatchPrefix(tokens, cache_salt);
  if (!match.ok()) return match.status();
  absl::MutexLock lock(&mu_);
  if (layout_.has_value() && *layout_ != match->layout) {
    client_->Release(match->lease_id).IgnoreError();
    const std::string was = layout_->ToString();
    layout_ = match->layout;
    return absl::FailedPreconditionError(
        absl::StrCat("the kv store's layout changed from ", was, " to ", match->layout.ToString()));
  }
  layout_ = match->layout;
  return Match{match->matched_tokens, match->lease_id};
}

absl::StatusOr<torch::Tensor> RemotePrefixStore::ReadRun(const KvStoreClient::MappedPool* pool,
                                                         uint64_t lease_id, torch::Device device,
                                                         int64_t* tokens) {
  if (pool != nullptr) {
    absl::StatusOr<std::vector<int32_t>> pages = client_->FetchShared(*pool, lease_id, tokens);
    if (!pages.ok()) return pages.status();
    // One gather out of the mapped pool (device to device, or out of shared
    // memory), while the caller's lease pins the pages.
    return ReadPages(pool->storage, *pages, device);
  }
  absl::StatusOr<KvStoreClient::Fetched> fetched = client_->Fetch(lease_id);
  if (!fetched.ok()) return fetched.status();
  *tokens = fetched->tokens;
  if (device.is_cpu()) return std::move(fetched->pages);
  return TorchResult("copying fetched pages", [&] { return fetched->pages.to(device); });
}

absl::Status RemotePrefixStore::Load(absl::Span<const LeasedRow> loads, BlockTables& rows) {
  absl::StatusOr<std::shared_ptr<const KvStoreClient::MappedPool>> pool = client_->Pool();
  if (!pool.ok()) return pool.status();
  for (const LeasedRow& load : loads) {
    if (load.tokens == 0) continue;
    int64_t tokens = 0;
    absl::StatusOr<torch::Tensor> run =
        ReadRun(pool->get(), load.lease_id, rows.storage().device(), &tokens);
    if (!run.ok()) return run.status();
    const int64_t page_size = run->size(4);  // (n, n_layer, 2, n_head, P, head_dim)
    if (load.tokens % page_size != 0 || load.tokens > tokens) {
      return absl::InternalError(absl::StrCat("kv store Fetch: lease ", load.lease_id, " gave ",
                                              tokens, " tokens, not ", load.tokens));
    }
    // By position, whatever the rows' page size.
    absl::StatusOr<torch::Tensor> kv = TorchResult(
        "reading fetched pages", [&] { return PagesAsTokens(*run).narrow(3, 0, load.tokens); });
    if (!kv.ok()) return kv.status();
    if (absl::Status s = rows.WriteTokens(load.row, 0, *kv); !s.ok()) return s;
    rows.set_length(load.row, load.tokens);
  }
  // The caller releases the leases next: copies out of a mapped pool must
  // have read them.
  if (*pool != nullptr) WaitForDevice((*pool)->storage.device());
  return absl::OkStatus();
}

absl::StatusOr<torch::Tensor> RemotePrefixStore::ReadLeased(uint64_t lease_id,
                                                            torch::Device device) {
  absl::StatusOr<std::shared_ptr<const KvStoreClient::MappedPool>> pool = client_->Pool();
  if (!pool.ok()) return pool.status();
  int64_t tokens = 0;
  absl::StatusOr<torch::Tensor> run = ReadRun(pool->get(), lease_id, device, &tokens);
  if (run.ok() && *pool != nullptr) WaitForDevice((*pool)->storage.device());
  return run;
}

absl::StatusOr<PrefixStore::Stored> RemotePrefixStore::StoreRow(const RowTokens& store,
                                                                BlockTables& rows, bool pin,
                                                                absl::string_view lease_holder) {
  const int64_t n = static_cast<int64_t>(store.tokens.size());
  absl::StatusOr<PageLayout> known = Layout();
  if (!known.ok()) return known.status();
  absl::StatusOr<KvStoreClient::Match> match =
      KvStoreClient::Match{store.base_tokens, store.base_lease_id, *known};
  bool own_lease = false;  // a lease of ours, not the caller's base
  if (store.base_lease_id == kNoLease) {
    match = client_->MatchPrefix(store.tokens, store.cache_salt);
    if (!match.ok()) return match.status();
    own_lease = true;
  }
  absl::Cleanup release = [&] {
    if (own_lease) client_->Release(match->lease_id).IgnoreError();
  };
  const PageLayout& layout = match->layout;
  if (n % layout.page_size != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("Store: ", n, " tokens is not a multiple of page_size ", layout.page_size));
  }
  // A lease of our own pins the row whole: it is the caller's, unless it
  // must be usable by a holder too (a Put without pages makes that lease).
  if (match->matched_tokens == n && (!pin || (own_lease && lease_holder.empty()))) {
    if (!pin) return Stored{kNoLease, n, 0};
    own_lease = false;  // the match lease pins all of it: it is the caller's now
    return Stored{match->lease_id, n, 0};
  }
  absl::StatusOr<torch::Tensor> kv = rows.ReadTokens(store.row, match->matched_tokens, n);
  if (!kv.ok()) return kv.status();
  const KvStoreClient::PutScope scope{std::string(store.cache_salt),
                                      pin ? std::string(lease_holder) : ""};
  absl::StatusOr<std::shared_ptr<const KvStoreClient::MappedPool>> pool = client_->Pool();
  if (!pool.ok()) return pool.status();
  absl::StatusOr<v1::PutResponse> put = absl::UnknownError("not put");
  if (*pool != nullptr && n > match->matched_tokens) {  // pages to write in place
    put = PutShared(**pool, store, *match, *kv, scope);
  } else {  // as bytes (or a bare Put of a row the store holds whole)
    // As the store's pages, on the CPU.
    absl::StatusOr<torch::Tensor> staged = TorchResult("staging pages", [&] {
      return TokensAsPages(kv->to(torch::kCPU, layout.dtype), layout.page_size);
    });
    if (!staged.ok()) return staged.status();
    put =
        client_->Put(store.tokens, match->lease_id, match->matched_tokens, *staged, layout, scope);
  }
  if (!put.ok()) {
    if (put.status().code() == absl::StatusCode::kResourceExhausted) {
      Stored refused;
      refused.not_stored = put.status();
      return refused;
    }
    return put.status();
  }
  if (!pin) {
    client_->Release(put->lease_id()).IgnoreError();
    return Stored{kNoLease, n, put->inserted_tokens()};
  }
  return Stored{put->lease_id(), n, put->inserted_tokens()};
}

absl::StatusOr<v1::PutResponse> RemotePrefixStore::PutShared(const KvStoreClient::MappedPool& pool,
                                                             const RowTokens& store,
                                                             const KvStoreClient::Match& base,
                                                             const torch::Tensor& kv,
                                                             const KvStoreClient::PutScope& scope) {
  const int64_t new_pages = kv.size(3) / pool.layout.page_size;
  absl::StatusOr<KvStoreClient::Reservation> reserved = client_->Reserve(pool, new_pages);
  if (!reserved.ok()) return reserved.status();
  // Written in place through the mapping, then waited for: the store
  // publishes the pages as soon as the commit arrives.
  absl::Status written = TorchResult("writing shared pages", [&] {
    torch::Tensor staged =
        TokensAsPages(kv.to(pool.storage.device(), pool.layout.dtype), pool.layout.page_size);
    return WritePages(pool.storage, reserved->pages, staged);
  });
  if (!written.ok()) return written;  // the reservation expires at the store
  WaitForDevice(pool.storage.device());
  return client_->Commit(store.tokens, base.lease_id, base.matched_tokens, pool, *reserved, scope);
}

absl::StatusOr<std::vector<PrefixStore::Stored>> RemotePrefixStore::Store(
    absl::Span<const RowTokens> stores, BlockTables& rows, bool pin,
    absl::string_view lease_holder) {
  std::vector<Stored> out;
  for (const RowTokens& store : stores) {
    absl::StatusOr<Stored> stored = Stored{};
    if (!store.tokens.empty()) stored = StoreRow(store, rows, pin, lease_holder);
    if (!stored.ok()) {
      for (const Stored& s : out) Release(s.lease_id).IgnoreError();
      return stored.status();
    }
    out.push_back(*stored);
  }
  return out;
}

absl::Status RemotePrefixStore::Release(uint64_t lease_id) {
  if (lease_id == kNoLease) return absl::OkStatus();
  return client_->Release(lease_id);
}

absl::StatusOr<std::vector<uint64_t>> RemotePrefixStore::Renew(
    absl::Span<const uint64_t> lease_ids) {
  return client_->Renew(std::vector<uint64_t>(lease_ids.begin(), lease_ids.end()));
}

}  // namespace nanoserve
