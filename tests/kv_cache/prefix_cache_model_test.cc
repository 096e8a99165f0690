// PrefixCache against a brute-force model: thousands of random matches,
// allocations, inserts, releases, frees and evictions over a small alphabet,
// so that prefixes are shared often; after every step the cache must agree
// with the model on match results, the cached set with its pages, page
// accounting, pins, LRU eviction order and page contents.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>
#include <set>
#include <vector>

#include "kv_cache/prefix_cache.h"
#include "tests/test_util/prefix_cache.h"

namespace nanoserve {
namespace prefix_cache_model_test {

using ::nanoserve::testing::FillPage;
using ::nanoserve::testing::HasTag;
using ::nanoserve::testing::MakeCache;
using ::nanoserve::testing::TagPage;
using Tokens = std::vector<int32_t>;
using Pages = std::vector<int32_t>;

Tokens Prefix(const Tokens& t, int64_t n) { return Tokens(t.begin(), t.begin() + n); }

// The cache as a plain map from every cached page-aligned prefix to the page
// holding its last page of tokens, with LRU stamps and pin counts per entry.
class Model {
 public:
  struct Entry {
    int32_t page;
    uint64_t stamp;
    int pins;
  };

  Model(int64_t page_size, int64_t num_pages) : ps_(page_size), num_pages_(num_pages) {}

  // Pages of the longest cached prefix of t; returns its length in pages.
  int64_t Peek(const Tokens& t, Pages* pages) const {
    int64_t k = 0;
    while ((k + 1) * ps_ <= static_cast<int64_t>(t.size())) {
      auto it = entries.find(Prefix(t, (k + 1) * ps_));
      if (it == entries.end()) break;
      if (pages != nullptr) pages->push_back(it->second.page);
      ++k;
    }
    return k;
  }

  // Stamps the first n pages of t as one access.
  void Touch(const Tokens& t, int64_t n) {
    ++clock_;
    for (int64_t i = 1; i <= n; ++i) entries.at(Prefix(t, i * ps_)).stamp = clock_;
  }

  void Pin(const Tokens& t, int delta) {
    for (int64_t i = 1; i * ps_ <= static_cast<int64_t>(t.size()); ++i) {
      entries.at(Prefix(t, i * ps_)).pins += delta;
    }
  }

  void Add(const Tokens& key, int32_t page) { entries[key] = {page, 0, 0}; }

  bool IsLeaf(const Tokens& key) const {
    auto next = entries.upper_bound(key);
    return next == entries.end() || next->first.size() <= key.size() ||
           !std::equal(key.begin(), key.end(), next->first.begin());
  }

  int64_t Evictable() const {
    int64_t n = 0;
    for (const auto& [key, e] : entries) n += e.pins == 0;
    return n;
  }
  int64_t Pinned() const { return static_cast<int64_t>(entries.size()) - Evictable(); }
  int64_t Free() const { return num_pages_ - static_cast<int64_t>(entries.size() + held.size()); }

  // Evicts up to n pages: each time the unpinned leaf entry with the oldest
  // stamp (stamps of leaf entries are distinct, as the tree's are).
  int64_t Evict(int64_t n) {
    int64_t evicted = 0;
    for (; evicted < n; ++evicted) {
      const Tokens* victim = nullptr;
      uint64_t oldest = 0;
      int ties = 0;
      for (const auto& [key, e] : entries) {
        if (e.pins != 0 || !IsLeaf(key)) continue;
        if (victim == nullptr || e.stamp < oldest) {
          victim = &key;
          oldest = e.stamp;
          ties = 0;
        } else if (e.stamp == oldest) {
          ++ties;
        }
      }
      if (victim == nullptr) break;
      EXPECT_EQ(ties, 0) << "LRU order is ambiguous";
      entries.erase(*victim);
    }
    return evicted;
  }

  std::map<Tokens, Entry> entries;
  std::map<uint64_t, Tokens> leases;  // lease id -> the prefix it pins
  std::vector<int32_t> held;          // caller-held pages

 private:
  const int64_t ps_;
  const int64_t num_pages_;
  uint64_t clock_ = 0;
};

class PrefixCacheModelTest : public ::testing::TestWithParam<int> {
 protected:
  void SetUp() override {
    ps_ = GetParam();
    num_pages_ = ps_ == 1 ? 10 : 8;
    max_pages_ = ps_ == 1 ? 6 : 4;
    cache_ = MakeCache(ps_, num_pages_);
    ASSERT_NE(cache_, nullptr);
    model_ = std::make_unique<Model>(ps_, num_pages_);
  }

  // A random sequence of whole pages. With page_size 1 the tokens are 0..3;
  // otherwise each page is one of three fixed granules, two of which differ
  // only in their last token ((0 1 2 3), (0 1 2 0), (1 1 1 1) for size 4),
  // or, rarely, random tokens 0..3.
  Tokens RandomPages(int64_t n) {
    Tokens granules[3];
    for (int64_t j = 0; j < ps_; ++j) {
      granules[0].push_back(j % 4);
      granules[1].push_back(j + 1 < ps_ ? j % 4 : (j + 1) % 4);
      granules[2].push_back(1);
    }
    Tokens t;
    for (int64_t i = 0; i < n; ++i) {
      if (ps_ == 1) {
        t.push_back(Rand(4));
      } else if (Rand(10) == 0) {
        for (int64_t j = 0; j < ps_; ++j) t.push_back(Rand(4));
      } else {
        const Tokens& g = granules[Rand(3)];
        t.insert(t.end(), g.begin(), g.end());
      }
    }
    return t;
  }

  int Rand(int n) { return static_cast<int>(rng_() % n); }

  void DoMatch() {
    Tokens t = RandomPages(Rand(max_pages_ + 1));
    for (int i = Rand(static_cast<int>(ps_)); i > 0; --i) t.push_back(Rand(4));
    Pages expected;
    const int64_t k = model_->Peek(t, &expected);
    PrefixCache::MatchResult m = cache_->Match(t);
    ASSERT_EQ(m.matched_tokens, k * ps_);
    ASSERT_EQ(m.pages, expected);
    model_->Touch(t, k);
    if (k == 0) {
      ASSERT_EQ(m.lease_id, PrefixCache::kNoLease);
      return;
    }
    ASSERT_NE(m.lease_id, PrefixCache::kNoLease);
    model_->leases[m.lease_id] = Prefix(t, k * ps_);
    model_->Pin(Prefix(t, k * ps_), +1);
  }

  void DoAllocate() {
    const int n = Rand(4);
    const int64_t free = model_->Free();
    auto got = cache_->AllocatePages(n);
    if (n > free + model_->Evictable()) {
      ASSERT_EQ(got.status().code(), absl::StatusCode::kResourceExhausted);
      ++exhausted_;
      return;
    }
    ASSERT_TRUE(got.ok()) << got.status();
    ASSERT_EQ(static_cast<int64_t>(got->size()), n);
    if (n > free) ASSERT_EQ(model_->Evict(n - free), n - free);
    for (int32_t page : *got) {
      for (const auto& [key, e] : model_->entries) ASSERT_NE(e.page, page);
      ASSERT_EQ(std::count(model_->held.begin(), model_->held.end(), page), 0);
      model_->held.push_back(page);
      FillPage(cache_->storage(), page, -1.0f);  // clobbers a cached page
    }
  }

  // Takes a random caller-held page off model_->held.
  int32_t TakeHeld() {
    const int i = Rand(static_cast<int>(model_->held.size()));
    const int32_t page = model_->held[i];
    model_->held.erase(model_->held.begin() + i);
    return page;
  }

  void DoInsert() {
    const int64_t n = Rand(max_pages_ + 1);
    const Tokens t = RandomPages(n);
    Pages tree_pages;
    const int64_t k = model_->Peek(t, &tree_pages);
    // For the cached part pass the tree's page (as after Match) or, at
    // random, a duplicate computed into a caller-held page.
    std::vector<bool> duplicate(n, false);
    int64_t need = n - k;
    for (int64_t i = 0; i < k; ++i) {
      duplicate[i] = Rand(3) == 0 && need < static_cast<int64_t>(model_->held.size());
      need += duplicate[i];
    }
    if (need > static_cast<int64_t>(model_->held.size())) return;
    const std::vector<int32_t> held_before = model_->held;
    Pages pages;
    for (int64_t i = 0; i < n; ++i) {
      if (i < k && !duplicate[i]) {
        pages.push_back(tree_pages[i]);
        continue;
      }
      pages.push_back(TakeHeld());
      TagPage(cache_->storage(), pages.back(), Prefix(t, (i + 1) * ps_));
    }
    // Now and then, a cached page in a wrong place: rejected, no change.
    if (n > k && !model_->entries.empty() && Rand(10) == 0) {
      Pages bad = pages;
      bad[k] = model_->entries.begin()->second.page;
      ASSERT_EQ(cache_->Insert(t, bad).status().code(), absl::StatusCode::kInvalidArgument);
    }
    auto inserted = cache_->Insert(t, pages);
    ASSERT_TRUE(inserted.ok()) << inserted.status();
    ASSERT_EQ(inserted->inserted_tokens, (n - k) * ps_);
    Pages expected = tree_pages;
    expected.insert(expected.end(), pages.begin() + k, pages.end());
    ASSERT_EQ(inserted->pages, expected);
    for (int64_t i = k; i < n; ++i) model_->Add(Prefix(t, (i + 1) * ps_), pages[i]);
    model_->Touch(t, n);
    if (n == 0) {
      ASSERT_EQ(inserted->lease_id, PrefixCache::kNoLease);
      return;
    }
    model_->leases[inserted->lease_id] = t;
    model_->Pin(t, +1);
  }

  void DoRelease() {
    if (model_->leases.empty() || Rand(10) == 0) {
      ASSERT_EQ(cache_->Release(uint64_t{1} << 40).code(), absl::StatusCode::kNotFound);
      return;
    }
    auto it = model_->leases.begin();
    std::advance(it, Rand(static_cast<int>(model_->leases.size())));
    ASSERT_TRUE(cache_->Release(it->first).ok());
    model_->Pin(it->second, -1);
    model_->leases.erase(it);
  }

  void DoFree() {
    if (model_->held.empty()) return;
    Pages pages = {TakeHeld()};
    if (!model_->held.empty() && Rand(2)) pages.push_back(TakeHeld());
    ASSERT_TRUE(cache_->FreePages(pages).ok());
  }

  void DoEvict() {
    const int n = Rand(4);
    const int64_t expected = std::min<int64_t>(n, model_->Evictable());
    ASSERT_EQ(cache_->Evict(n), expected);
    ASSERT_EQ(model_->Evict(n), expected);
  }

  // The cache and the model agree on everything observable.
  void ExpectSameState() {
    ASSERT_TRUE(cache_->CheckInvariants().ok()) << cache_->CheckInvariants();
    std::map<Tokens, int32_t> cached;
    for (const CachedPath& path : cache_->DumpPaths()) {
      ASSERT_EQ(path.tokens.size(), path.pages.size() * ps_);
      for (size_t i = 0; i < path.pages.size(); ++i) {
        cached[Prefix(path.tokens, (i + 1) * ps_)] = path.pages[i];
      }
    }
    std::map<Tokens, int32_t> expected;
    for (const auto& [key, e] : model_->entries) expected[key] = e.page;
    ASSERT_EQ(cached, expected);
    const PrefixCacheStats stats = cache_->Stats();
    ASSERT_EQ(stats.pages_cached, static_cast<int64_t>(expected.size()));
    ASSERT_EQ(stats.pages_free, model_->Free());
    ASSERT_EQ(stats.pages_pinned, model_->Pinned());
    ASSERT_EQ(stats.active_leases, static_cast<int64_t>(model_->leases.size()));
    for (const auto& [key, e] : model_->entries) {
      ASSERT_TRUE(HasTag(cache_->storage(), e.page, key))
          << "cached page " << e.page << " was overwritten";
    }
  }

  int64_t exhausted_ = 0;  // failed allocations
  int64_t ps_ = 1;
  int64_t num_pages_ = 0;
  int64_t max_pages_ = 0;
  std::mt19937 rng_{12345};
  std::unique_ptr<PrefixCache> cache_;
  std::unique_ptr<Model> model_;
};

TEST_P(PrefixCacheModelTest, AgreesWithBruteForceOverRandomOperations) {
  constexpr int kSteps = 4000;
  int64_t evictions = 0, hits = 0;
  for (int step = 0; step < kSteps; ++step) {
    const PrefixCacheStats before = cache_->Stats();
    // Keep leases and caller-held pages bounded so that eviction happens.
    int op = Rand(100);
    if (model_->leases.size() > 4 && Rand(2)) op = 70;
    if (model_->held.size() > 6 && Rand(2)) op = 85;
    if (op < 30) {
      DoMatch();
    } else if (op < 45) {
      DoAllocate();
    } else if (op < 70) {
      DoInsert();
    } else if (op < 85) {
      DoRelease();
    } else if (op < 93) {
      DoFree();
    } else {
      DoEvict();
    }
    if (HasFatalFailure()) FAIL() << "at step " << step;
    ExpectSameState();
    if (HasFatalFailure()) FAIL() << "at step " << step;
    const PrefixCacheStats after = cache_->Stats();
    evictions += after.evicted_pages > before.evicted_pages;
    hits += after.hit_tokens > before.hit_tokens;
  }
  // The run exercised what it is meant to.
  EXPECT_GT(evictions, 100);
  EXPECT_GT(hits, 300);
  EXPECT_GT(exhausted_, 10);

  // Releasing everything and evicting all returns every page.
  for (const auto& [id, prefix] : model_->leases) {
    ASSERT_TRUE(cache_->Release(id).ok());
  }
  ASSERT_TRUE(cache_->FreePages(model_->held).ok());
  EXPECT_EQ(cache_->EvictAll(), static_cast<int64_t>(model_->entries.size()));
  const PrefixCacheStats stats = cache_->Stats();
  EXPECT_EQ(stats.pages_free, num_pages_);
  EXPECT_EQ(stats.nodes, 0);
  EXPECT_EQ(stats.active_leases, 0);
  EXPECT_TRUE(cache_->CheckInvariants().ok());
}

INSTANTIATE_TEST_SUITE_P(PageSizes, PrefixCacheModelTest, ::testing::Values(1, 2, 4));

}  // namespace prefix_cache_model_test
}  // namespace nanoserve
