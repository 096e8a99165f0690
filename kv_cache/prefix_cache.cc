#include "kv_cache/prefix_cache.h"

#include <sys/random.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"

namespace nanoserve {
namespace {

// Aborts on a broken internal invariant (never on bad input).
void CheckOk(const absl::Status& status, const char* what) {
  if (!status.ok()) {
    std::fprintf(stderr, "PrefixCache: %s: %s\n", what, status.ToString().c_str());
    std::abort();
  }
}

// 64 bits from the kernel's CSPRNG: lease ids are capabilities.
uint64_t RandomId() {
  uint64_t id = 0;
  char* out = reinterpret_cast<char*>(&id);
  size_t filled = 0;
  while (filled < sizeof(id)) {
    const ssize_t n = getrandom(out + filled, sizeof(id) - filled, 0);
    if (n > 0) {
      filled += static_cast<size_t>(n);
    } else if (errno != EINTR) {
      std::perror("PrefixCache: getrandom");
      std::abort();
    }
  }
  return id;
}

}  // namespace

absl::Status ValidateCacheSalt(absl::string_view cache_salt) {
  if (static_cast<int64_t>(cache_salt.size()) > kMaxCacheSaltBytes) {
    return absl::InvalidArgumentError(absl::StrCat("cache_salt of ", cache_salt.size(),
                                                   " bytes is longer than ", kMaxCacheSaltBytes));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<PrefixCache>> PrefixCache::Create(
    const PrefixCacheOptions& options) {
  if (options.lease_ttl <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("PrefixCache: lease_ttl must be > 0");
  }
  absl::StatusOr<std::unique_ptr<PagePool>> pool = PagePool::Create(options.pool);
  if (!pool.ok()) return pool.status();
  // Beside an exported pool, the index of its cached pages, in host shared
  // memory whatever the pool's device (peers read it on the CPU).
  ExportedTensor index;
  if ((*pool)->segment().transport != KvTransport::kBytes) {
    absl::StatusOr<ExportedTensor> exported =
        AllocateExported({PageIndex::WordsFor((*pool)->num_pages(), (*pool)->page_size())},
                         torch::kInt64, torch::Device(torch::kCPU), options.pool.epoch);
    if (exported.ok()) {
      index = *std::move(exported);
    } else {
      std::fprintf(stderr, "PrefixCache: no page index for peers (%s)\n",
                   exported.status().ToString().c_str());
    }
  }
  return std::unique_ptr<PrefixCache>(new PrefixCache(options, *std::move(pool), index));
}

PrefixCache::PrefixCache(const PrefixCacheOptions& options, std::unique_ptr<PagePool> pool,
                         const ExportedTensor& index)
    : options_(options),
      page_size_(pool->page_size()),
      num_pages_(pool->num_pages()),
      storage_(pool->storage()),
      segment_(pool->segment()),
      index_storage_(index.tensor),
      index_segment_(index.segment),
      pool_(std::move(pool)),
      tree_(page_size_),
      cached_(static_cast<size_t>(num_pages_), 0) {
  if (index_storage_.defined()) {
    // A random seed: callers cannot craft keys that collide in it.
    index_ = std::make_unique<PageIndex>(IndexWords(), index_storage_.numel(), num_pages_,
                                         page_size_, RandomId());
  }
}

uint64_t* PrefixCache::IndexWords() const {
  return reinterpret_cast<uint64_t*>(index_storage_.data_ptr<int64_t>());
}

int64_t PrefixCache::index_words() const {
  return index_storage_.defined() ? index_storage_.numel() : 0;
}

int64_t PrefixCache::IndexedPages(absl::Span<const int32_t> tokens,
                                  absl::string_view cache_salt) const {
  if (!index_storage_.defined()) return -1;
  const std::optional<std::vector<PageIndex::Found>> found =
      PageIndex::Find(IndexWords(), index_storage_.numel(), cache_salt, tokens);
  return found.has_value() ? static_cast<int64_t>(found->size()) : -1;
}

PrefixCache::MatchResult PrefixCache::Match(absl::Span<const int32_t> tokens,
                                            absl::string_view cache_salt,
                                            absl::string_view caller) {
  absl::MutexLock lock(&mu_);
  MatchResult result;
  Tree::MatchResult match = tree_.Match(cache_salt, tokens, &result.pages);
  result.matched_tokens = match.length;
  result.lease_id = NewLeaseLocked(match.node, caller, "");
  ++counters_.lookups;
  counters_.lookup_tokens += static_cast<int64_t>(tokens.size());
  counters_.hit_tokens += match.length;
  return result;
}

absl::StatusOr<std::vector<int32_t>> PrefixCache::AllocatePages(int64_t n) {
  absl::MutexLock lock(&mu_);
  if (n < 0) {
    return absl::InvalidArgumentError(absl::StrCat("AllocatePages: negative page count ", n));
  }
  const int64_t free = pool_->num_free();
  if (n > free) {
    const int64_t evictable = tree_.num_values() - tree_.num_pinned_values();
    if (n > free + evictable) {
      const int64_t caller_held = num_pages_ - free - tree_.num_values();
      return absl::ResourceExhaustedError(absl::StrCat(
          "KV cache pool exhausted: need ", n, " pages of ", num_pages_, "; ", free, " free, ",
          evictable, " evictable, ", tree_.num_pinned_values(), " pinned by ", leases_.size(),
          " leases, ", caller_held, " held by callers"));
    }
    EvictLocked(n - free);
  }
  return pool_->Allocate(n);
}

absl::Status PrefixCache::FreePages(absl::Span<const int32_t> pages) {
  absl::MutexLock lock(&mu_);
  for (int32_t page : pages) {
    if (pool_->is_valid(page) && cached_[page]) {
      return absl::InvalidArgumentError(absl::StrCat("FreePages: page ", page,
                                                     " is cached; only caller-held pages can "
                                                     "be freed"));
    }
  }
  return pool_->Free(pages);
}

absl::Status PrefixCache::CheckPagesLocked(absl::Span<const int32_t> pages,
                                           absl::Span<const int32_t> tree_pages) const {
  absl::flat_hash_set<int32_t> seen;
  for (size_t i = 0; i < pages.size(); ++i) {
    const int32_t page = pages[i];
    if (!pool_->is_valid(page)) {
      return absl::InvalidArgumentError(
          absl::StrCat("Insert: page ", page, " out of range [0, ", num_pages_, ")"));
    }
    if (!seen.insert(page).second) {
      return absl::InvalidArgumentError(absl::StrCat("Insert: page ", page, " listed twice"));
    }
    if (i < tree_pages.size() && page == tree_pages[i]) continue;
    if (pool_->is_free(page)) {
      return absl::InvalidArgumentError(
          absl::StrCat("Insert: page ", page, " is free; pass pages from AllocatePages"));
    }
    if (cached_[page]) {
      return absl::InvalidArgumentError(absl::StrCat("Insert: page ", page,
                                                     " is cached for other tokens "
                                                     "than those of position ",
                                                     i));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<PrefixCache::InsertResult> PrefixCache::Insert(absl::Span<const int32_t> tokens,
                                                              absl::Span<const int32_t> pages,
                                                              absl::string_view cache_salt,
                                                              absl::string_view caller,
                                                              absl::string_view holder) {
  absl::MutexLock lock(&mu_);
  if (static_cast<int64_t>(tokens.size()) % page_size_ != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Insert: ", tokens.size(), " tokens are not a whole number of pages of ", page_size_));
  }
  const int64_t n_pages = static_cast<int64_t>(tokens.size()) / page_size_;
  if (static_cast<int64_t>(pages.size()) != n_pages) {
    return absl::InvalidArgumentError(absl::StrCat("Insert: ", tokens.size(), " tokens need ",
                                                   n_pages, " pages, got ", pages.size()));
  }
  std::vector<int32_t> tree_pages;
  tree_.Peek(cache_salt, tokens, &tree_pages);
  if (absl::Status s = CheckPagesLocked(pages, tree_pages); !s.ok()) return s;

  InsertResult result;
  Tree::InsertResult inserted = tree_.Insert(cache_salt, tokens, pages, &result.pages);
  const int64_t existing_pages = inserted.existing_length / page_size_;
  std::vector<int32_t> duplicates;
  for (int64_t i = 0; i < n_pages; ++i) {
    if (i < existing_pages) {
      if (pages[i] != result.pages[i]) duplicates.push_back(pages[i]);
    } else {
      cached_[pages[i]] = 1;
    }
  }
  if (index_ != nullptr && existing_pages < n_pages) {
    index_->Add(cache_salt, tokens, result.pages, existing_pages);
  }
  CheckOk(pool_->Free(duplicates), "freeing duplicate pages");
  result.inserted_tokens = static_cast<int64_t>(tokens.size()) - inserted.existing_length;
  result.lease_id = NewLeaseLocked(inserted.node, caller, holder);
  counters_.inserted_tokens += result.inserted_tokens;
  return result;
}

uint64_t PrefixCache::NewLeaseLocked(Tree::Node* node, absl::string_view caller,
                                     absl::string_view holder) {
  if (node == nullptr) return kNoLease;
  tree_.Pin(node);
  // Random, so that a holder cannot guess (and use) another's lease.
  uint64_t id = kNoLease;
  while (id == kNoLease || leases_.contains(id)) id = RandomId();
  leases_.emplace(id, Lease{node, absl::Now(), std::string(caller),
                            std::string(holder.empty() ? caller : holder)});
  return id;
}

const PrefixCache::Lease* PrefixCache::FindLeaseLocked(uint64_t lease_id,
                                                       absl::string_view caller) const {
  auto it = leases_.find(lease_id);
  if (it == leases_.end()) return nullptr;
  const Lease& lease = it->second;
  return caller == lease.caller || caller == lease.holder ? &lease : nullptr;
}

absl::Status PrefixCache::Release(uint64_t lease_id, absl::string_view caller) {
  if (lease_id == kNoLease) return absl::OkStatus();
  absl::MutexLock lock(&mu_);
  const Lease* lease = FindLeaseLocked(lease_id, caller);
  if (lease == nullptr) return absl::NotFoundError(absl::StrCat("Release: no lease ", lease_id));
  tree_.Unpin(lease->node);
  leases_.erase(lease_id);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int32_t>> PrefixCache::LeasedPages(uint64_t lease_id,
                                                              absl::string_view caller) const {
  absl::MutexLock lock(&mu_);
  const Lease* lease = FindLeaseLocked(lease_id, caller);
  if (lease == nullptr) {
    return absl::NotFoundError(absl::StrCat("LeasedPages: no lease ", lease_id));
  }
  std::vector<int32_t> pages;
  Tree::AppendPathValues(lease->node, &pages);
  return pages;
}

absl::StatusOr<PrefixCache::MatchResult> PrefixCache::ShareLease(uint64_t lease_id,
                                                                 absl::string_view caller,
                                                                 absl::string_view holder) {
  absl::MutexLock lock(&mu_);
  const Lease* lease = FindLeaseLocked(lease_id, caller);
  if (lease == nullptr) {
    return absl::NotFoundError(absl::StrCat("ShareLease: no lease ", lease_id));
  }
  Tree::Node* node = lease->node;  // `lease` dangles once a lease is added
  MatchResult result;
  Tree::AppendPathValues(node, &result.pages);
  result.matched_tokens = static_cast<int64_t>(result.pages.size()) * page_size_;
  result.lease_id = NewLeaseLocked(node, caller, holder);
  return result;
}

absl::Status PrefixCache::RenewLease(uint64_t lease_id, absl::string_view caller, absl::Time now) {
  absl::MutexLock lock(&mu_);
  const Lease* lease = FindLeaseLocked(lease_id, caller);
  if (lease == nullptr) {
    return absl::NotFoundError(absl::StrCat("RenewLease: no lease ", lease_id));
  }
  leases_.find(lease_id)->second.renewed = now;
  return absl::OkStatus();
}

int64_t PrefixCache::ReapExpiredLeases(absl::Time now) {
  if (options_.lease_ttl == absl::InfiniteDuration()) return 0;
  absl::MutexLock lock(&mu_);
  int64_t reaped = 0;
  for (auto it = leases_.begin(); it != leases_.end();) {
    if (now - it->second.renewed > options_.lease_ttl) {
      tree_.Unpin(it->second.node);
      leases_.erase(it++);
      ++reaped;
    } else {
      ++it;
    }
  }
  counters_.expired_leases += reaped;
  return reaped;
}

int64_t PrefixCache::EvictLocked(int64_t n_pages) {
  std::vector<int32_t> evicted;
  tree_.Evict(n_pages, [&](int32_t page) {
    cached_[page] = 0;
    // Out of the index (its generation moved on) before the pool may hand
    // the page to a writer.
    if (index_ != nullptr) index_->Remove(page);
    evicted.push_back(page);
  });
  CheckOk(pool_->Free(evicted), "freeing evicted pages");
  counters_.evicted_pages += static_cast<int64_t>(evicted.size());
  return static_cast<int64_t>(evicted.size());
}

int64_t PrefixCache::Evict(int64_t n_pages) {
  absl::MutexLock lock(&mu_);
  return EvictLocked(n_pages);
}

int64_t PrefixCache::EvictAll() {
  absl::MutexLock lock(&mu_);
  return EvictLocked(std::numeric_limits<int64_t>::max());
}

PrefixCacheStats PrefixCache::Stats() const {
  absl::MutexLock lock(&mu_);
  PrefixCacheStats stats = counters_;
  stats.pages_total = num_pages_;
  stats.pages_free = pool_->num_free();
  stats.pages_in_use = num_pages_ - stats.pages_free;
  stats.pages_cached = tree_.num_values();
  stats.pages_pinned = tree_.num_pinned_values();
  stats.nodes = tree_.num_nodes();
  stats.namespaces = tree_.num_namespaces();
  stats.active_leases = static_cast<int64_t>(leases_.size());
  return stats;
}

std::vector<CachedPath> PrefixCache::DumpPaths() const {
  absl::MutexLock lock(&mu_);
  std::vector<const Tree::Node*> leaves;
  tree_.ForEachNode([&](const Tree::Node& node) {
    if (node.is_leaf()) leaves.push_back(&node);
  });
  std::stable_sort(leaves.begin(), leaves.end(), [](const Tree::Node* a, const Tree::Node* b) {
    return a->last_access() < b->last_access();
  });
  std::vector<CachedPath> paths;
  paths.reserve(leaves.size());
  for (const Tree::Node* leaf : leaves) {
    CachedPath path;
    path.cache_salt = Tree::NamespaceOf(leaf);
    path.tokens = Tree::PathTokens(leaf);
    Tree::AppendPathValues(leaf, &path.pages);
    paths.push_back(std::move(path));
  }
  return paths;
}

absl::Status PrefixCache::CheckInvariants() const {
  absl::MutexLock lock(&mu_);
  if (absl::Status s = pool_->CheckInvariants(); !s.ok()) return s;
  if (absl::Status s = tree_.CheckInvariants(); !s.ok()) return s;
  // Cached pages: each in one node once, allocated, and flagged.
  std::vector<uint8_t> in_tree(static_cast<size_t>(num_pages_), 0);
  absl::Status status;
  absl::flat_hash_map<const Tree::Node*, int64_t> pins;
  tree_.ForEachNode([&](const Tree::Node& node) {
    pins[&node] = 0;
    for (int32_t page : node.values()) {
      if (!status.ok()) return;
      if (!pool_->is_valid(page) || in_tree[page]++ || pool_->is_free(page)) {
        status = absl::InternalError(
            absl::StrCat("cached page ", page, " is out of range, cached twice or free"));
      }
    }
  });
  if (!status.ok()) return status;
  for (int64_t page = 0; page < num_pages_; ++page) {
    if (in_tree[page] != cached_[page]) {
      return absl::InternalError(absl::StrCat("page ", page, " cached flag ", int{cached_[page]},
                                              " but in tree ", int{in_tree[page]}));
    }
  }
  // Leases: each pins a node of the tree, accounting for all direct pins.
  for (const auto& [id, lease] : leases_) {
    auto it = pins.find(lease.node);
    if (it == pins.end()) {
      return absl::InternalError(absl::StrCat("lease ", id, " pins a node not in the tree"));
    }
    ++it->second;
  }
  for (const auto& [node, count] : pins) {
    if (node->direct_pins() != count) {
      return absl::InternalError(
          absl::StrCat("a node has ", node->direct_pins(), " pins but ", count, " leases"));
    }
  }
  return absl::OkStatus();
}

}  // namespace nanoserve
