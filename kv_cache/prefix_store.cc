#include "kv_cache/prefix_store.h"

#include <algorithm>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"

namespace nanoserve {

absl::StatusOr<PageLayout> LocalPrefixStore::Layout() { return cache_->options().pool.layout; }

absl::StatusOr<std::vector<PrefixStore::Match>> PrefixStore::MatchPrefixes(
    absl::Span<const MatchQuery> queries) {
  std::vector<Match> matches;
  for (const MatchQuery& q : queries) {
    absl::StatusOr<Match> match = MatchPrefix(q.tokens, q.cache_salt);
    if (!match.ok()) {
      for (const Match& taken : matches) Release(taken.lease_id).IgnoreError();
      return match.status();
    }
    matches.push_back(*std::move(match));
  }
  return matches;
}

absl::Status PrefixStore::ReleaseAll(absl::Span<const uint64_t> lease_ids) {
  absl::Status first = absl::OkStatus();
  for (uint64_t id : lease_ids) {
    absl::Status released = Release(id);
    if (first.ok()) first = released;
  }
  return first;
}

absl::StatusOr<PrefixStore::Match> LocalPrefixStore::MatchPrefix(absl::Span<const int32_t> tokens,
                                                                 absl::string_view cache_salt) {
  PrefixCache::MatchResult m = cache_->Match(tokens, cache_salt);
  return Match{m.matched_tokens, m.lease_id};
}

absl::Status LocalPrefixStore::Load(absl::Span<const LeasedRow> loads, BlockTables& rows) {
  const bool in_place = &rows.pool() == cache_;
  if (!in_place && rows.pool().options().pool.layout != cache_->options().pool.layout) {
    return absl::InvalidArgumentError("Load: the rows' pool has another page layout");
  }
  for (const LeasedRow& load : loads) {
    if (load.tokens == 0) continue;
    if (in_place) {
      if (absl::Status s = rows.AttachLease(load.row, load.lease_id, load.tokens); !s.ok()) {
        return s;
      }
      continue;
    }
    absl::StatusOr<std::vector<int32_t>> pages = cache_->LeasedPages(load.lease_id);
    if (!pages.ok()) return pages.status();
    const int64_t n = load.tokens / cache_->page_size();
    if (load.tokens % cache_->page_size() != 0 || n > static_cast<int64_t>(pages->size())) {
      return absl::InvalidArgumentError(absl::StrCat("lease ", load.lease_id, " pins ",
                                                     pages->size(), " pages, not ", load.tokens,
                                                     " tokens"));
    }
    pages->resize(n);
    if (absl::Status s = rows.PrepareWrite(load.row, 0, load.tokens); !s.ok()) return s;
    const std::vector<int32_t> dst(rows.pages(load.row).begin(), rows.pages(load.row).begin() + n);
    if (absl::Status s = CopyPages(cache_->storage(), *pages, rows.storage(), dst); !s.ok()) {
      return s;
    }
    rows.set_length(load.row, load.tokens);
  }
  return absl::OkStatus();
}

absl::StatusOr<torch::Tensor> LocalPrefixStore::ReadLeased(uint64_t lease_id,
                                                           torch::Device device) {
  absl::StatusOr<std::vector<int32_t>> pages = cache_->LeasedPages(lease_id);
  if (!pages.ok()) return pages.status();
  return ReadPages(cache_->storage(), *pages, device);
}

absl::StatusOr<std::vector<PrefixStore::Stored>> LocalPrefixStore::Store(
    absl::Span<const RowTokens> stores, BlockTables& rows, bool pin,
    absl::string_view lease_holder) {
  const int64_t page_size = cache_->page_size();
  const bool in_place = &rows.pool() == cache_;
  if (!in_place && rows.pool().options().pool.layout != cache_->options().pool.layout) {
    return absl::InvalidArgumentError("Store: the rows' pool has another page layout");
  }
  std::vector<Stored> out(stores.size());
  bool succeeded = false;
  absl::Cleanup cleanup = [&] {
    if (succeeded) return;
    for (const Stored& s : out) cache_->Release(s.lease_id).IgnoreError();
  };
  for (size_t i = 0; i < stores.size(); ++i) {
    const RowTokens& store = stores[i];
    const int64_t n = static_cast<int64_t>(store.tokens.size());
    if (n % page_size != 0 || n > rows.length(store.row)) {
      return absl::InvalidArgumentError(
          absl::StrCat("Store: ", n, " tokens of row ", store.row, " (", rows.length(store.row),
                       " cached) are not whole pages of ", page_size));
    }
    if (n == 0) continue;
    const std::vector<int32_t> row_pages(rows.pages(store.row).begin(),
                                         rows.pages(store.row).begin() + n / page_size);
    std::vector<int32_t> pages;  // what Insert gets: the tree's, then caller-held
    if (in_place) {
      pages = row_pages;
    } else {
      PrefixCache::MatchResult held = cache_->Match(store.tokens, store.cache_salt);
      absl::Cleanup release = [&] { cache_->Release(held.lease_id).IgnoreError(); };
      const int64_t cached = held.matched_tokens / page_size;
      absl::StatusOr<std::vector<int32_t>> fresh = cache_->AllocatePages(n / page_size - cached);
      if (!fresh.ok()) continue;  // no room: not stored
      absl::Cleanup free_fresh = [&] { cache_->FreePages(*fresh).IgnoreError(); };
      const std::vector<int32_t> from(row_pages.begin() + cached, row_pages.end());
      if (absl::Status s = CopyPages(rows.storage(), from, cache_->storage(), *fresh); !s.ok()) {
        return s;
      }
      pages = held.pages;
      pages.insert(pages.end(), fresh->begin(), fresh->end());
      absl::StatusOr<PrefixCache::InsertResult> inserted =
          cache_->Insert(store.tokens, pages, store.cache_salt, "", lease_holder);
      if (!inserted.ok()) return inserted.status();
      std::move(free_fresh).Cancel();  // adopted (or freed as duplicates) by the tree
      if (!pin) {
        cache_->Release(inserted->lease_id).IgnoreError();
        inserted->lease_id = kNoLease;
      }
      out[i] = {inserted->lease_id, n, inserted->inserted_tokens};
      continue;
    }
    absl::StatusOr<PrefixCache::InsertResult> inserted =
        cache_->Insert(store.tokens, pages, store.cache_salt, "", lease_holder);
    if (!inserted.ok()) return inserted.status();
    // The row reads the tree's pages now, under the insert's lease.
    rows.AdoptInserted(store.row, inserted->pages, inserted->lease_id);
    out[i] = {kNoLease, n, inserted->inserted_tokens};
    if (pin) {
      absl::StatusOr<PrefixCache::MatchResult> mine =
          cache_->ShareLease(inserted->lease_id, "", lease_holder);
      if (!mine.ok()) return mine.status();
      out[i].lease_id = mine->lease_id;
    }
  }
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
