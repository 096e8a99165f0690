#include "kv_store/prefix_store.h"

#include <algorithm>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"

namespace nanoserve {

absl::StatusOr<PageLayout> LocalPrefixStore::Layout() { return cache_->options().pool.layout; }

absl::StatusOr<PrefixStore::Match> LocalPrefixStore::MatchPrefix(absl::Span<const int32_t> tokens,
                                                                 absl::string_view cache_salt) {
  PrefixCache::MatchResult m = cache_->Match(tokens, cache_salt);
  return Match{m.matched_tokens, m.lease_id};
}

absl::Status LocalPrefixStore::Load(absl::Span<const LeasedRow> loads, const RowsKv& rows) {
  std::vector<PageRun> runs;
  for (const LeasedRow& load : loads) {
    if (load.tokens == 0) continue;
    absl::StatusOr<std::vector<int32_t>> pages = cache_->LeasedPages(load.lease_id);
    if (!pages.ok()) return pages.status();
    const int64_t n = load.tokens / cache_->page_size();
    if (load.tokens % cache_->page_size() != 0 || n > static_cast<int64_t>(pages->size())) {
      return absl::InvalidArgumentError(absl::StrCat("lease ", load.lease_id, " pins ",
                                                     pages->size(), " pages, not ", load.tokens,
                                                     " tokens"));
    }
    pages->resize(n);
    runs.push_back({load.row, 0, *std::move(pages)});
  }
  return LoadRuns(cache_->storage(), runs, rows);
}

absl::StatusOr<torch::Tensor> LocalPrefixStore::ReadLeased(uint64_t lease_id,
                                                           torch::Device device) {
  absl::StatusOr<std::vector<int32_t>> pages = cache_->LeasedPages(lease_id);
  if (!pages.ok()) return pages.status();
  return ReadPages(cache_->storage(), *pages, device);
}

absl::StatusOr<std::vector<PrefixStore::Stored>> LocalPrefixStore::Store(
    absl::Span<const RowTokens> stores, const RowsKv& rows, bool pin,
    absl::string_view lease_holder) {
  const int64_t page_size = cache_->page_size();
  std::vector<Stored> out(stores.size());
  struct Pending {
    size_t index;                   // into stores
    PrefixCache::MatchResult held;  // what the tree holds now, pinned
    std::vector<int32_t> pages;     // caller-held until inserted
  };
  std::vector<Pending> pending;
  auto drop_pending = [&] {
    for (Pending& p : pending) {
      cache_->Release(p.held.lease_id).IgnoreError();
      if (!p.pages.empty()) cache_->FreePages(p.pages).IgnoreError();
    }
    pending.clear();
  };
  bool succeeded = false;
  absl::Cleanup cleanup = [&] {
    drop_pending();
    if (succeeded) return;
    for (const Stored& s : out) cache_->Release(s.lease_id).IgnoreError();
  };
  // Writes the pending rows' new pages in one scatter and inserts them.
  auto flush = [&]() -> absl::Status {
    std::vector<PageRun> runs;
    for (const Pending& p : pending) {
      if (!p.pages.empty()) runs.push_back({stores[p.index].row, p.held.matched_tokens, p.pages});
    }
    if (absl::Status s = StoreRuns(rows, runs, cache_->storage()); !s.ok()) return s;
    for (Pending& p : pending) {
      const absl::Span<const int32_t> tokens = stores[p.index].tokens;
      std::vector<int32_t> all_pages = p.held.pages;
      all_pages.insert(all_pages.end(), p.pages.begin(), p.pages.end());
      absl::StatusOr<PrefixCache::InsertResult> inserted =
          cache_->Insert(tokens, all_pages, stores[p.index].cache_salt, "", lease_holder);
      if (!inserted.ok()) return inserted.status();
      p.pages.clear();  // adopted (or freed as duplicates) by the tree
      if (!pin) {
        cache_->Release(inserted->lease_id).IgnoreError();
        inserted->lease_id = kNoLease;
      }
      out[p.index] = {inserted->lease_id, static_cast<int64_t>(tokens.size()),
                      inserted->inserted_tokens};
    }
    drop_pending();
    return absl::OkStatus();
  };
  for (size_t i = 0; i < stores.size(); ++i) {
    const int64_t n = static_cast<int64_t>(stores[i].tokens.size());
    if (n % page_size != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("Store: ", n, " tokens is not a multiple of page_size ", page_size));
    }
    if (n == 0) continue;
    for (int attempt = 0; attempt < 2; ++attempt) {
      Pending p{i, cache_->Match(stores[i].tokens, stores[i].cache_salt), {}};
      absl::StatusOr<std::vector<int32_t>> pages =
          cache_->AllocatePages((n - p.held.matched_tokens) / page_size);
      if (pages.ok()) {
        p.pages = *std::move(pages);
        pending.push_back(std::move(p));
        break;
      }
      cache_->Release(p.held.lease_id).IgnoreError();
      // No room while earlier rows hold theirs: store those, then try once
      // more. Still no room: this row is not stored.
      if (pending.empty()) break;
      if (absl::Status s = flush(); !s.ok()) return s;
    }
  }
  if (absl::Status s = flush(); !s.ok()) return s;
  succeeded = true;
  return out;
}

absl::Status LocalPrefixStore::Release(uint64_t lease_id) { return cache_->Release(lease_id); }

absl::StatusOr<std::vector<uint64_t>> LocalPrefixStore::Renew(
    absl::Span<const uint64_t> lease_ids) {
  std::vector<uint64_t> unknown;
  for (uint64_t id : lease_ids) {
    if (!cache_->RenewLease(id).ok()) unknown.push_back(id);
  }
  return unknown;
}

}  // namespace nanoserve
