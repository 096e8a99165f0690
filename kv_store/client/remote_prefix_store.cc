#include "kv_store/client/remote_prefix_store.h"

#include <optional>
#include <utility>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "base/torch_status.h"
#include "kv_cache/page_index.h"
#include "kv_store/client/kv_wire.h"

namespace nanoserve {
namespace {

// Row `row` (empty) takes the first `tokens` tokens of `run` (pages as
// ReadPages gives them) by position, whatever the rows' page size.
absl::Status WriteRunIntoRow(const torch::Tensor& run, int64_t tokens, int64_t row,
                             BlockTables& rows) {
  absl::StatusOr<torch::Tensor> kv =
      TorchResult("reading fetched pages", [&] { return PagesAsTokens(run).narrow(3, 0, tokens); });
  if (!kv.ok()) return kv.status();
  if (absl::Status s = rows.WriteTokens(row, 0, *kv); !s.ok()) return s;
  rows.set_length(row, tokens);
  return absl::OkStatus();
}

// Pages `pages` of a mapped pool (`storage`, pages of `page_size` tokens)
// into (empty) row `row`: page to page where the page sizes agree, else by
// position.
absl::Status CopyPoolPagesIntoRow(const torch::Tensor& storage, int64_t page_size,
                                  absl::Span<const int32_t> pages, int64_t row, BlockTables& rows) {
  if (page_size == rows.page_size()) return rows.CopyPagesIn(row, storage, pages);
  absl::StatusOr<torch::Tensor> run = ReadPages(storage, pages, rows.storage().device());
  if (!run.ok()) return run.status();
  return WriteRunIntoRow(*run, static_cast<int64_t>(pages.size()) * page_size, row, rows);
}

}  // namespace

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
  absl::StatusOr<std::vector<Match>> matches = MatchPrefixes({{tokens, cache_salt}});
  if (!matches.ok()) return matches.status();
  return std::move(matches->front());
}

std::optional<int64_t> RemotePrefixStore::CachedTokensHint(absl::Span<const int32_t> tokens,
                                                           absl::string_view cache_salt) {
  absl::StatusOr<std::shared_ptr<const KvStoreClient::MappedPool>> pool = client_->Pool();
  if (!pool.ok() || *pool == nullptr || !(*pool)->page_index.defined()) return std::nullopt;
  const KvStoreClient::MappedPool& mapped = **pool;
  const std::optional<std::vector<PageIndex::Found>> found =
      PageIndex::Find(reinterpret_cast<const uint64_t*>(mapped.page_index.data_ptr<int64_t>()),
                      mapped.page_index.numel(), cache_salt, tokens);
  if (!found.has_value()) return std::nullopt;
  return static_cast<int64_t>(found->size()) * mapped.layout.page_size;
}

std::vector<int64_t> RemotePrefixStore::LoadUnleasedRows(absl::Span<const UnleasedLoad> loads,
                                                         BlockTables& rows) {
  std::vector<int64_t> taken(loads.size(), 0);
  absl::StatusOr<std::shared_ptr<const KvStoreClient::MappedPool>> pool = client_->Pool();
  if (!pool.ok() || *pool == nullptr || !(*pool)->page_index.defined()) return taken;
  const KvStoreClient::MappedPool& mapped = **pool;
  const uint64_t* words = reinterpret_cast<const uint64_t*>(mapped.page_index.data_ptr<int64_t>());
  const int64_t n_words = mapped.page_index.numel();
  // Each row's pages found and their copies issued; the found pages of the
  // rows copied, to check once the copies are done.
  std::vector<std::optional<std::vector<PageIndex::Found>>> found(loads.size());
  bool copied = false;
  for (size_t i = 0; i < loads.size(); ++i) {
    const UnleasedLoad& load = loads[i];
    if (rows.length(load.row) != 0) continue;
    found[i] = PageIndex::Find(words, n_words, load.cache_salt, load.tokens);
    if (!found[i].has_value() || found[i]->empty()) {
      found[i].reset();
      continue;
    }
    std::vector<int32_t> pages;
    for (const PageIndex::Found& f : *found[i]) pages.push_back(f.page);
    if (!CopyPoolPagesIntoRow(mapped.storage, mapped.layout.page_size, pages, load.row, rows)
             .ok()) {
      rows.Reset(load.row);
      found[i].reset();
      continue;
    }
    copied = true;
  }
  if (!copied) return taken;
  // The copies have read the pages; were they still the ones found?
  WaitForDevice(mapped.storage.device());
  for (size_t i = 0; i < loads.size(); ++i) {
    if (!found[i].has_value()) continue;
    if (PageIndex::Unchanged(words, n_words, *found[i])) {
      taken[i] = rows.length(loads[i].row);
    } else {
      rows.Reset(loads[i].row);
    }
  }
  return taken;
}

absl::StatusOr<std::vector<PrefixStore::Match>> RemotePrefixStore::MatchPrefixes(
    absl::Span<const MatchQuery> queries) {
  std::vector<KvStoreClient::MatchQuery> asked;
  for (const MatchQuery& q : queries) asked.push_back({q.tokens, q.cache_salt});
  absl::StatusOr<std::vector<KvStoreClient::Match>> matches = client_->MatchPrefixes(asked);
  if (!matches.ok()) return matches.status();
  std::vector<Match> out;
  absl::MutexLock lock(&mu_);
  for (KvStoreClient::Match& match : *matches) {
    if (layout_.has_value() && *layout_ != match.layout) {
      std::vector<uint64_t> leases;
      for (const KvStoreClient::Match& m : *matches) leases.push_back(m.lease_id);
      client_->Release(leases).IgnoreError();
      const std::string was = layout_->ToString();
      layout_ = match.layout;
      return absl::FailedPreconditionError(absl::StrCat("the kv store's layout changed from ", was,
                                                        " to ", match.layout.ToString()));
    }
    layout_ = match.layout;
    out.push_back(Match{match.matched_tokens, match.lease_id,
                        PoolPages{match.pool_epoch, std::move(match.pool_pages)}});
  }
  return out;
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
    if (*pool != nullptr) {
      // Out of the mapping, by the ids the Match gave for this pool, else
      // by ids asked for.
      const KvStoreClient::MappedPool& mapped = **pool;
      absl::StatusOr<std::vector<int32_t>> pages = load.pool_pages.pages;
      tokens = static_cast<int64_t>(load.pool_pages.pages.size()) * mapped.layout.page_size;
      if (load.pool_pages.epoch != mapped.epoch || tokens < load.tokens) {
        pages = client_->FetchShared(mapped, load.lease_id, &tokens);
      }
      if (!pages.ok()) return pages.status();
      if (load.tokens % mapped.layout.page_size != 0 || load.tokens > tokens) {
        return absl::InternalError(absl::StrCat("kv store Fetch: lease ", load.lease_id, " gave ",
                                                tokens, " tokens, not ", load.tokens));
      }
      const absl::Span<const int32_t> wanted =
          absl::MakeConstSpan(*pages).first(load.tokens / mapped.layout.page_size);
      absl::Status copied =
          CopyPoolPagesIntoRow(mapped.storage, mapped.layout.page_size, wanted, load.row, rows);
      if (!copied.ok()) return copied;
      continue;
    }
    absl::StatusOr<torch::Tensor> run =
        ReadRun(nullptr, load.lease_id, rows.storage().device(), &tokens);
    if (!run.ok()) return run.status();
    const int64_t page_size = run->size(4);  // (n, n_layer, 2, n_head, P, head_dim)
    if (load.tokens % page_size != 0 || load.tokens > tokens) {
      return absl::InternalError(absl::StrCat("kv store Fetch: lease ", load.lease_id, " gave ",
                                              tokens, " tokens, not ", load.tokens));
    }
    if (absl::Status s = WriteRunIntoRow(*run, load.tokens, load.row, rows); !s.ok()) return s;
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

absl::StatusOr<torch::Tensor> RemotePrefixStore::PoolOf(const PoolPages& lease) {
  absl::StatusOr<std::shared_ptr<const KvStoreClient::MappedPool>> pool = client_->Pool();
  if (!pool.ok()) return pool.status();
  if (*pool == nullptr) {
    return absl::FailedPreconditionError("the kv store's pool is not mapped here");
  }
  const KvStoreClient::MappedPool& mapped = **pool;
  if (mapped.epoch != lease.epoch) {
    return absl::FailedPreconditionError(absl::StrCat("page ids of the pool of epoch ", lease.epoch,
                                                      "; the pool mapped here is of epoch ",
                                                      mapped.epoch));
  }
  const int64_t num_pages = mapped.storage.size(0);
  if (lease.pages.empty()) return absl::InvalidArgumentError("pool pages: no pages");
  for (int32_t page : lease.pages) {
    if (page < 0 || page >= num_pages) {
      return absl::InvalidArgumentError(
          absl::StrCat("pool pages: page ", page, " is not in the pool's [0, ", num_pages, ")"));
    }
  }
  return mapped.storage;  // its deleter unmaps: the view keeps the mapping
}

absl::StatusOr<torch::Tensor> RemotePrefixStore::ReadPoolPages(const PoolPages& lease,
                                                               torch::Device device) {
  absl::StatusOr<torch::Tensor> pool = PoolOf(lease);
  if (!pool.ok()) return pool.status();
  absl::StatusOr<torch::Tensor> run = ReadPages(*pool, lease.pages, device);
  // The caller may release the lease next: the gather must have read them.
  if (run.ok()) WaitForDevice(pool->device());
  return run;
}

PrefixStore::Stored RemotePrefixStore::StoredFrom(const v1::PutResponse& put, int64_t tokens,
                                                  bool pin) {
  if (!pin) {
    client_->Release(put.lease_id()).IgnoreError();
    return Stored{kNoLease, tokens, put.inserted_tokens()};
  }
  Stored stored{put.lease_id(), tokens, put.inserted_tokens()};
  if (put.has_shared()) {
    stored.pool_pages.epoch = put.shared().epoch();
    stored.pool_pages.pages.assign(put.shared().pages().begin(), put.shared().pages().end());
  }
  return stored;
}

absl::Status RemotePrefixStore::PrepareRow(size_t index, const RowTokens& store, BlockTables& rows,
                                           bool pin, absl::string_view lease_holder,
                                           const KvStoreClient::MappedPool* pool,
                                           std::vector<Stored>& out,
                                           std::vector<PendingRow>* in_place,
                                           const KvStoreClient::Match* base_match) {
  const int64_t n = static_cast<int64_t>(store.tokens.size());
  absl::StatusOr<PageLayout> known = Layout();
  if (!known.ok()) return known.status();
  PendingRow row{index, &store, {store.base_tokens, store.base_lease_id, *known}, false, {}};
  if (base_match != nullptr) {  // Store matched the row for its caller
    row.base = *base_match;
    row.own_lease = true;
  }
  absl::Cleanup release = [&] {
    if (row.own_lease) client_->Release(row.base.lease_id).IgnoreError();
  };
  const PageLayout& layout = row.base.layout;
  const int64_t matched = row.base.matched_tokens;
  if (n % layout.page_size != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("Store: ", n, " tokens is not a multiple of page_size ", layout.page_size));
  }
  // A lease of our own pins the row whole: it is the caller's, unless it
  // must be usable by a holder too (a Put without pages makes that lease).
  if (matched == n && (!pin || (row.own_lease && lease_holder.empty()))) {
    if (!pin) {
      out[index] = Stored{kNoLease, n, 0};
      return absl::OkStatus();
    }
    row.own_lease = false;  // the match lease pins all of it: it is the caller's now
    out[index] = Stored{row.base.lease_id, n, 0};
    if (pool != nullptr && row.base.pool_epoch == pool->epoch) {
      out[index].pool_pages = PoolPages{pool->epoch, row.base.pool_pages};
    }
    return absl::OkStatus();
  }
  if (pool != nullptr && n > matched) {                // pages to write in place, with the batch's
    if (pool->layout.page_size != rows.page_size()) {  // else copied page to page
      absl::StatusOr<torch::Tensor> kv = rows.ReadTokens(store.row, matched, n);
      if (!kv.ok()) return kv.status();
      row.kv = *std::move(kv);
    }
    std::move(release).Cancel();  // ours until the row is committed
    in_place->push_back(std::move(row));
    return absl::OkStatus();
  }
  absl::StatusOr<torch::Tensor> kv = rows.ReadTokens(store.row, matched, n);
  if (!kv.ok()) return kv.status();
  // As bytes (or a bare Put of a row the store holds whole), as the store's
  // pages on the CPU; naming the mapped pool's epoch gets the page ids.
  const KvStoreClient::PutScope scope{std::string(store.cache_salt),
                                      pin ? std::string(lease_holder) : "",
                                      pool != nullptr ? pool->epoch : 0};
  absl::StatusOr<torch::Tensor> staged = TorchResult("staging pages", [&] {
    return TokensAsPages(kv->to(torch::kCPU, layout.dtype), layout.page_size);
  });
  if (!staged.ok()) return staged.status();
  absl::StatusOr<v1::PutResponse> put =
      client_->Put(store.tokens, row.base.lease_id, matched, *staged, layout, scope);
  if (!put.ok()) {
    if (put.status().code() != absl::StatusCode::kResourceExhausted) return put.status();
    out[index].not_stored = put.status();
    return absl::OkStatus();
  }
  out[index] = StoredFrom(*put, n, pin);
  return absl::OkStatus();
}

absl::Status RemotePrefixStore::StoreInPlace(const KvStoreClient::MappedPool& pool,
                                             const std::vector<PendingRow>& in_place,
                                             const BlockTables& rows, bool pin,
                                             absl::string_view lease_holder,
                                             std::vector<Stored>& out) {
  if (in_place.empty()) return absl::OkStatus();
  const int64_t page_size = pool.layout.page_size;
  std::vector<int64_t> sizes;
  for (const PendingRow& row : in_place) {
    sizes.push_back((static_cast<int64_t>(row.store->tokens.size()) - row.base.matched_tokens) /
                    page_size);
  }
  absl::StatusOr<KvStoreClient::Reserved> reserved = client_->ReserveBatch(pool, sizes);
  if (!reserved.ok()) {
    if (reserved.status().code() != absl::StatusCode::kResourceExhausted) return reserved.status();
    for (const PendingRow& row : in_place) out[row.index].not_stored = reserved.status();
    return absl::OkStatus();
  }
  const std::vector<KvStoreClient::Reservation>& granted = reserved->granted;
  for (size_t k = granted.size(); k < in_place.size(); ++k) {
    out[in_place[k].index].not_stored =
        absl::ResourceExhaustedError(absl::StrCat("kv store Reserve: ", reserved->refused));
  }
  // Written in place through the mapping, then waited for once: the store
  // publishes the pages as soon as the commit arrives.
  absl::Status written = absl::OkStatus();
  for (size_t k = 0; written.ok() && k < granted.size(); ++k) {
    const PendingRow& row = in_place[k];
    if (!row.kv.defined()) {  // the row's pages from the base on, page to page
      const absl::Span<const int32_t> from =
          absl::MakeConstSpan(rows.pages(row.store->row))
              .subspan(row.base.matched_tokens / page_size, granted[k].pages.size());
      written = CopyPages(rows.storage(), from, pool.storage, granted[k].pages);
      continue;
    }
    written = TorchResult("writing shared pages", [&] {
      torch::Tensor staged =
          TokensAsPages(row.kv.to(pool.storage.device(), pool.layout.dtype), page_size);
      return WritePages(pool.storage, granted[k].pages, staged);
    });
  }
  if (!written.ok()) {  // hand every reservation back now
    std::vector<uint64_t> abandoned;
    for (const KvStoreClient::Reservation& r : granted) abandoned.push_back(r.id);
    client_->CommitBatch(pool, {}, abandoned).IgnoreError();
    return written;
  }
  WaitForDevice(pool.storage.device());
  std::vector<KvStoreClient::CommitRow> commits;
  for (size_t k = 0; k < granted.size(); ++k) {
    const PendingRow& row = in_place[k];
    commits.push_back(
        {row.store->tokens,
         row.base.lease_id,
         row.base.matched_tokens,
         granted[k].id,
         {std::string(row.store->cache_salt), pin ? std::string(lease_holder) : "", pool.epoch}});
  }
  // A failed call leaves the reservations to expire at the store.
  absl::StatusOr<std::vector<absl::StatusOr<v1::PutResponse>>> committed =
      client_->CommitBatch(pool, commits);
  if (!committed.ok()) return committed.status();
  absl::Status failed = absl::OkStatus();
  for (size_t k = 0; k < granted.size(); ++k) {
    const absl::StatusOr<v1::PutResponse>& put = (*committed)[k];
    Stored& stored = out[in_place[k].index];
    if (put.ok()) {
      stored = StoredFrom(*put, static_cast<int64_t>(in_place[k].store->tokens.size()), pin);
    } else if (put.status().code() == absl::StatusCode::kResourceExhausted) {
      stored.not_stored = put.status();
    } else if (failed.ok()) {
      failed = put.status();
    }
  }
  return failed;
}

absl::StatusOr<std::vector<PrefixStore::Stored>> RemotePrefixStore::Store(
    absl::Span<const RowTokens> stores, BlockTables& rows, bool pin,
    absl::string_view lease_holder) {
  absl::StatusOr<std::shared_ptr<const KvStoreClient::MappedPool>> pool = client_->Pool();
  if (!pool.ok()) return pool.status();
  std::vector<Stored> out(stores.size());
  std::vector<PendingRow> in_place;
  // Base leases of our own are released once their rows are committed, or
  // not; on failure the rows' new leases are released too.
  absl::Cleanup release_own = [&] {
    std::vector<uint64_t> own;
    for (const PendingRow& row : in_place) {
      if (row.own_lease) own.push_back(row.base.lease_id);
    }
    client_->Release(own).IgnoreError();
  };
  absl::Cleanup release_out = [&] {
    std::vector<uint64_t> leases;
    for (const Stored& s : out) leases.push_back(s.lease_id);
    client_->Release(leases).IgnoreError();
  };
  // Rows whose caller matched no base (loaded without a lease) are matched
  // here, all in one call; each row owns its match's lease once prepared.
  std::vector<KvStoreClient::MatchQuery> queries;
  std::vector<size_t> unmatched;
  for (size_t i = 0; i < stores.size(); ++i) {
    if (!stores[i].tokens.empty() && stores[i].base_lease_id == kNoLease &&
        !stores[i].base_matched) {
      queries.push_back({stores[i].tokens, stores[i].cache_salt});
      unmatched.push_back(i);
    }
  }
  std::vector<KvStoreClient::Match> matches;
  if (!queries.empty()) {
    absl::StatusOr<std::vector<KvStoreClient::Match>> matched = client_->MatchPrefixes(queries);
    if (!matched.ok()) return matched.status();
    matches = *std::move(matched);
  }
  std::vector<const KvStoreClient::Match*> match_of(stores.size(), nullptr);
  for (size_t k = 0; k < unmatched.size(); ++k) match_of[unmatched[k]] = &matches[k];
  size_t handed = 0;  // rows before it own their matches' leases
  absl::Cleanup release_unhanded = [&] {
    std::vector<uint64_t> leases;
    for (size_t k = 0; k < unmatched.size(); ++k) {
      if (unmatched[k] >= handed) leases.push_back(matches[k].lease_id);
    }
    client_->Release(leases).IgnoreError();
  };
  for (size_t i = 0; i < stores.size(); ++i) {
    handed = i + 1;
    if (stores[i].tokens.empty()) continue;
    absl::Status prepared =
        PrepareRow(i, stores[i], rows, pin, lease_holder, pool->get(), out, &in_place, match_of[i]);
    if (!prepared.ok()) return prepared;
  }
  if (*pool != nullptr) {
    absl::Status stored = StoreInPlace(**pool, in_place, rows, pin, lease_holder, out);
    if (!stored.ok()) return stored;
  }
  std::move(release_out).Cancel();
  return out;
}

absl::Status RemotePrefixStore::ReleaseAll(absl::Span<const uint64_t> lease_ids) {
  return client_->Release(lease_ids);
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
