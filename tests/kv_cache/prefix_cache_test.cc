#include "kv_cache/prefix_cache.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "kv_cache/page_layout.h"
#include "tests/test_util/prefix_cache.h"

namespace nanoserve {
namespace prefix_cache_test {

using ::nanoserve::testing::FillPage;
using ::nanoserve::testing::MakeCache;
using ::nanoserve::testing::PageHolds;
using Tokens = std::vector<int32_t>;
using Pages = std::vector<int32_t>;

// The usual flow: match, allocate the rest, insert; releases both leases.
PrefixCache::InsertResult Cache(PrefixCache& cache, const Tokens& tokens) {
  PrefixCache::MatchResult m = cache.Match(tokens);
  const int64_t need = static_cast<int64_t>(tokens.size()) / cache.page_size() -
                       static_cast<int64_t>(m.pages.size());
  auto fresh = cache.AllocatePages(need);
  EXPECT_TRUE(fresh.ok()) << fresh.status();
  Pages pages = m.pages;
  pages.insert(pages.end(), fresh->begin(), fresh->end());
  auto inserted = cache.Insert(tokens, pages);
  EXPECT_TRUE(inserted.ok()) << inserted.status();
  EXPECT_TRUE(cache.Release(m.lease_id).ok());
  EXPECT_TRUE(cache.Release(inserted->lease_id).ok());
  return *inserted;
}

TEST(PrefixCacheTest, SeedExampleSharesPrefixesAndCountsThemOnce) {
  auto cache = MakeCache(/*page_size=*/1, /*num_pages=*/16);
  EXPECT_EQ(Cache(*cache, {1, 2, 3, 4}).inserted_tokens, 4);
  EXPECT_EQ(Cache(*cache, {1, 2, 3, 5}).inserted_tokens, 1);
  EXPECT_EQ(Cache(*cache, {1, 2, 6}).inserted_tokens, 1);
  ASSERT_TRUE(cache->CheckInvariants().ok()) << cache->CheckInvariants();

  PrefixCacheStats stats = cache->Stats();
  EXPECT_EQ(stats.inserted_tokens, 6);
  EXPECT_EQ(stats.pages_cached, 6);
  EXPECT_EQ(stats.nodes, 5);  // [1 2] -> {[3] -> {[4], [5]}, [6]}
  EXPECT_EQ(stats.pages_free, 10);

  struct Case {
    Tokens query;
    int64_t matched;
  };
  for (const Case& c : std::vector<Case>{{{1, 2, 3, 4, 7}, 4},
                                         {{1, 2, 3, 5}, 4},
                                         {{1, 2, 6, 6}, 3},
                                         {{1, 2, 3}, 3},
                                         {{1, 9}, 1},
                                         {{9}, 0}}) {
    PrefixCache::MatchResult m = cache->Match(c.query);
    EXPECT_EQ(m.matched_tokens, c.matched) << c.query.size();
    EXPECT_EQ(static_cast<int64_t>(m.pages.size()), c.matched);
    EXPECT_EQ(m.lease_id == PrefixCache::kNoLease, c.matched == 0);
    EXPECT_TRUE(cache->Release(m.lease_id).ok());
  }
  stats = cache->Stats();
  EXPECT_EQ(stats.lookups, 3 + 6);
  EXPECT_EQ(stats.active_leases, 0);
}

TEST(PrefixCacheTest, MatchesArePageAligned) {
  auto cache = MakeCache(/*page_size=*/4, /*num_pages=*/8);
  Cache(*cache, {1, 2, 3, 4, 5, 6, 7, 8});
  PrefixCache::MatchResult m = cache->Match({1, 2, 3, 4, 5, 6, 7});
  EXPECT_EQ(m.matched_tokens, 4);
  EXPECT_EQ(m.pages.size(), 1u);
  EXPECT_EQ(cache->Match({1, 2, 3}).matched_tokens, 0);
  EXPECT_EQ(cache->Match({1, 2, 3, 4, 5, 6, 7, 9}).matched_tokens, 4);
  const PrefixCacheStats stats = cache->Stats();
  EXPECT_EQ(stats.lookup_tokens, 8 + 7 + 3 + 8);
  EXPECT_EQ(stats.hit_tokens, 0 + 4 + 0 + 4);
  // Inserts must be whole pages.
  auto pages = *cache->AllocatePages(1);
  EXPECT_EQ(cache->Insert({1, 2, 3}, pages).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(PrefixCacheTest, InsertKeepsTheTreesPagesAndFreesDuplicates) {
  auto cache = MakeCache(/*page_size=*/2, /*num_pages=*/10);
  const Tokens tokens = {1, 2, 3, 4, 5, 6};
  // Two callers computed the same sequence into their own pages.
  Pages mine = *cache->AllocatePages(3);
  Pages theirs = *cache->AllocatePages(3);
  auto first = cache->Insert(tokens, mine);
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(first->pages, mine);
  EXPECT_EQ(first->inserted_tokens, 6);
  auto second = cache->Insert(tokens, theirs);
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(second->pages, mine);
  EXPECT_EQ(second->inserted_tokens, 0);
  EXPECT_EQ(cache->Stats().pages_free, 10 - 3);  // theirs went back
  for (int32_t page : theirs) {
    EXPECT_EQ(cache->FreePages({page}).code(),
              absl::StatusCode::kInvalidArgument);  // not freed twice
  }

  // The common case: pages from Match followed by new pages. The matched
  // pages stay the tree's; nothing is freed.
  PrefixCache::MatchResult m = cache->Match({1, 2, 3, 4, 7, 7});
  ASSERT_EQ(m.matched_tokens, 4);
  Pages pages = m.pages;
  Pages fresh = *cache->AllocatePages(1);
  pages.push_back(fresh[0]);
  auto third = cache->Insert({1, 2, 3, 4, 7, 7}, pages);
  ASSERT_TRUE(third.ok());
  EXPECT_EQ(third->pages, pages);
  EXPECT_EQ(third->inserted_tokens, 2);
  const PrefixCacheStats stats = cache->Stats();
  EXPECT_EQ(stats.pages_cached, 4);
  EXPECT_EQ(stats.pages_free, 6);
  EXPECT_EQ(stats.inserted_tokens, 8);
  EXPECT_TRUE(cache->CheckInvariants().ok()) << cache->CheckInvariants();
}

TEST(PrefixCacheTest, BadInsertsAndFreesChangeNothing) {
  auto cache = MakeCache(/*page_size=*/2, /*num_pages=*/8);
  Cache(*cache, {1, 1, 2, 2});  // caches 2 pages
  PrefixCache::MatchResult m = cache->Match({1, 1, 2, 2});
  Pages held = *cache->AllocatePages(3);
  const PrefixCacheStats before = cache->Stats();
  const std::vector<CachedPath> paths = cache->DumpPaths();

  const Tokens six = {1, 1, 3, 3, 4, 4};
  Pages free_page;
  for (int32_t p = 0; p < cache->num_pages(); ++p) {
    if (p != m.pages[0] && p != m.pages[1] && p != held[0] && p != held[1] && p != held[2]) {
      free_page.push_back(p);
    }
  }
  for (const Pages& bad : std::vector<Pages>{
           {held[0], held[1]},                // too few pages
           {held[0], held[1], held[1]},       // listed twice
           {held[0], held[1], free_page[0]},  // a free page
           {held[0], m.pages[1], held[1]},    // a cached page, other place
           {held[0], held[1], 99},            // out of range
       }) {
    EXPECT_EQ(cache->Insert(six, bad).status().code(), absl::StatusCode::kInvalidArgument);
  }
  EXPECT_EQ(cache->Insert({1, 1, 3}, {held[0], held[1]}).status().code(),
            absl::StatusCode::kInvalidArgument);  // not whole pages
  EXPECT_EQ(cache->FreePages({m.pages[0]}).code(),
            absl::StatusCode::kInvalidArgument);  // cached
  EXPECT_EQ(cache->FreePages({held[0], free_page[0]}).code(),
            absl::StatusCode::kInvalidArgument);  // free
  EXPECT_EQ(cache->Release(12345).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(cache->AllocatePages(-1).status().code(), absl::StatusCode::kInvalidArgument);

  const PrefixCacheStats after = cache->Stats();
  EXPECT_EQ(after.pages_free, before.pages_free);
  EXPECT_EQ(after.pages_cached, before.pages_cached);
  EXPECT_EQ(after.active_leases, before.active_leases);
  EXPECT_EQ(after.inserted_tokens, before.inserted_tokens);
  EXPECT_EQ(cache->DumpPaths().size(), paths.size());
  EXPECT_EQ(cache->DumpPaths()[0].pages, paths[0].pages);
  EXPECT_TRUE(cache->CheckInvariants().ok()) << cache->CheckInvariants();
  // The held pages are still the caller's.
  EXPECT_TRUE(cache->FreePages(held).ok());
}

TEST(PrefixCacheTest, LeasedPagesSurviveEvictionPressureIntact) {
  auto cache = MakeCache(/*page_size=*/2, /*num_pages=*/8);
  const torch::Tensor& storage = cache->storage();
  // A: 4 pages, written and leased.
  const Tokens a = {1, 1, 2, 2, 3, 3, 4, 4};
  Pages a_pages = *cache->AllocatePages(4);
  for (int i = 0; i < 4; ++i) FillPage(storage, a_pages[i], 100.0f + i);
  auto a_insert = cache->Insert(a, a_pages);
  ASSERT_TRUE(a_insert.ok());
  // B: 4 pages, not leased.
  Cache(*cache, {5, 5, 6, 6, 7, 7, 8, 8});
  ASSERT_EQ(cache->Stats().pages_free, 0);

  // Allocation evicts B, never A.
  auto four = cache->AllocatePages(4);
  ASSERT_TRUE(four.ok()) << four.status();
  EXPECT_EQ(cache->Stats().evicted_pages, 4);
  for (int32_t page : *four) {
    EXPECT_EQ(std::count(a_pages.begin(), a_pages.end(), page), 0);
  }
  // Everything is pinned or held now.
  const PrefixCacheStats before = cache->Stats();
  auto one = cache->AllocatePages(1);
  EXPECT_EQ(one.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(one.status().message().find("4 pinned"), std::string::npos) << one.status();
  EXPECT_EQ(cache->Evict(10), 0);
  EXPECT_EQ(cache->EvictAll(), 0);
  const PrefixCacheStats after = cache->Stats();
  EXPECT_EQ(after.evicted_pages, before.evicted_pages);
  EXPECT_EQ(after.pages_pinned, 4);

  // A's K/V are intact and still match.
  PrefixCache::MatchResult m = cache->Match(a);
  EXPECT_EQ(m.matched_tokens, 8);
  EXPECT_EQ(m.pages, a_pages);
  for (int i = 0; i < 4; ++i) {
    EXPECT_TRUE(PageHolds(storage, a_pages[i], 100.0f + i)) << i;
  }
  auto read = ReadPages(storage, m.pages, torch::kCPU);
  ASSERT_TRUE(read.ok());
  // (4 pages, n_layer, 2, n_head, page_size, head_dim): A's last page.
  EXPECT_TRUE(read->select(0, 3).eq(103.0f).all().item<bool>());

  // Once both leases go, A's tail is evictable.
  ASSERT_TRUE(cache->Release(m.lease_id).ok());
  EXPECT_EQ(cache->AllocatePages(1).status().code(),
            absl::StatusCode::kResourceExhausted);  // still one lease
  ASSERT_TRUE(cache->Release(a_insert->lease_id).ok());
  EXPECT_TRUE(cache->AllocatePages(1).ok());
  EXPECT_EQ(cache->Match(a).matched_tokens, 6);
}

TEST(PrefixCacheTest, LeasedPagesAreThePinnedPathsPages) {
  auto cache = MakeCache(/*page_size=*/2, /*num_pages=*/8);
  const Pages all = Cache(*cache, {1, 2, 3, 4, 5, 6}).pages;
  ASSERT_EQ(all.size(), 3u);
  PrefixCache::MatchResult m = cache->Match(Tokens{1, 2, 3, 4, 9, 9});
  ASSERT_EQ(m.matched_tokens, 4);
  auto leased = cache->LeasedPages(m.lease_id);
  ASSERT_TRUE(leased.ok()) << leased.status();
  EXPECT_EQ(*leased, Pages(all.begin(), all.begin() + 2));
  EXPECT_EQ(*leased, m.pages);
  ASSERT_TRUE(cache->Release(m.lease_id).ok());
  EXPECT_EQ(cache->LeasedPages(m.lease_id).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(cache->LeasedPages(PrefixCache::kNoLease).status().code(), absl::StatusCode::kNotFound);
}

// A shared lease pins the same path: it outlives the first one's release,
// and its holder may use it; another caller may not share it.
TEST(PrefixCacheTest, ASharedLeasePinsThePathUntilReleasedToo) {
  auto cache = MakeCache(/*page_size=*/2, /*num_pages=*/8);
  const Pages all = Cache(*cache, {1, 2, 3, 4}).pages;
  PrefixCache::MatchResult m = cache->Match(Tokens{1, 2, 3, 4}, "", "alice");
  auto shared = cache->ShareLease(m.lease_id, "alice", "bob");
  ASSERT_TRUE(shared.ok()) << shared.status();
  EXPECT_NE(shared->lease_id, m.lease_id);
  EXPECT_EQ(shared->pages, all);
  EXPECT_EQ(shared->matched_tokens, 4);
  EXPECT_EQ(cache->ShareLease(m.lease_id, "mallory").status().code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(cache->Release(m.lease_id, "alice").ok());
  EXPECT_EQ(cache->Evict(8), 0);  // still pinned by the shared lease
  ASSERT_TRUE(cache->Release(shared->lease_id, "bob").ok());
  EXPECT_EQ(cache->Evict(8), 2);
  EXPECT_TRUE(cache->CheckInvariants().ok());
}

TEST(PrefixCacheTest, EvictsLeastRecentlyUsedFirst) {
  auto cache = MakeCache(/*page_size=*/1, /*num_pages=*/8);
  Cache(*cache, {1});
  Cache(*cache, {2});
  Cache(*cache, {3});
  ASSERT_TRUE(cache->Release(cache->Match({1}).lease_id).ok());
  EXPECT_EQ(cache->Evict(1), 1);
  EXPECT_EQ(cache->Match({2}).matched_tokens, 0);
  EXPECT_EQ(cache->Evict(1), 1);
  EXPECT_EQ(cache->Match({3}).matched_tokens, 0);
  PrefixCache::MatchResult m = cache->Match({1});
  EXPECT_EQ(m.matched_tokens, 1);
  ASSERT_TRUE(cache->Release(m.lease_id).ok());
  EXPECT_EQ(cache->EvictAll(), 1);
  EXPECT_EQ(cache->Stats().pages_free, 8);
}

TEST(PrefixCacheTest, ExpiredLeasesAreReaped) {
  auto cache = MakeCache(/*page_size=*/1, /*num_pages=*/4, absl::Seconds(10));
  Cache(*cache, {1, 2});
  const absl::Time start = absl::Now();
  PrefixCache::MatchResult m1 = cache->Match({1, 2});
  PrefixCache::MatchResult m2 = cache->Match({1});
  EXPECT_EQ(cache->Stats().pages_pinned, 2);
  EXPECT_EQ(cache->ReapExpiredLeases(start), 0);
  ASSERT_TRUE(cache->RenewLease(m2.lease_id, "", start + absl::Seconds(20)).ok());
  EXPECT_EQ(cache->ReapExpiredLeases(start + absl::Seconds(25)), 1);
  EXPECT_EQ(cache->Release(m1.lease_id).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(cache->RenewLease(m1.lease_id).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(cache->Stats().pages_pinned, 1);
  EXPECT_EQ(cache->ReapExpiredLeases(start + absl::Seconds(31)), 1);
  const PrefixCacheStats stats = cache->Stats();
  EXPECT_EQ(stats.expired_leases, 2);
  EXPECT_EQ(stats.active_leases, 0);
  EXPECT_EQ(stats.pages_pinned, 0);
  EXPECT_EQ(cache->EvictAll(), 2);
  EXPECT_TRUE(cache->CheckInvariants().ok());
}

TEST(PrefixCacheTest, LeasesNeverExpireWithoutATtl) {
  auto cache = MakeCache(/*page_size=*/1, /*num_pages=*/4);
  Cache(*cache, {1});
  PrefixCache::MatchResult m = cache->Match({1});
  EXPECT_EQ(cache->ReapExpiredLeases(absl::Now() + absl::Hours(1000)), 0);
  EXPECT_TRUE(cache->Release(m.lease_id).ok());
}

TEST(PrefixCacheTest, CreateRejectsBadOptions) {
  PrefixCacheOptions options;
  options.pool.layout.n_layer = options.pool.layout.n_head = options.pool.layout.head_dim = 1;
  options.pool.byte_budget = 1;  // less than a page
  EXPECT_EQ(PrefixCache::Create(options).status().code(), absl::StatusCode::kInvalidArgument);
  options.pool.byte_budget = 1 << 20;
  options.lease_ttl = absl::ZeroDuration();
  EXPECT_EQ(PrefixCache::Create(options).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace prefix_cache_test
}  // namespace nanoserve

namespace nanoserve {
namespace prefix_cache_test {

// Lease ids are random: a holder cannot guess another's from its own.
TEST(PrefixCacheLeaseTest, IdsAreNotGuessable) {
  auto cache = testing::MakeCache(/*page_size=*/1, /*num_pages=*/8);
  std::vector<int32_t> pages = cache->AllocatePages(1).value();
  auto inserted = cache->Insert({5}, pages).value();
  std::vector<uint64_t> ids = {inserted.lease_id};
  for (int i = 0; i < 64; ++i) ids.push_back(cache->Match({5}).lease_id);
  int consecutive = 0;
  for (size_t i = 1; i < ids.size(); ++i) {
    EXPECT_NE(ids[i], PrefixCache::kNoLease);
    consecutive += ids[i] == ids[i - 1] + 1;
  }
  EXPECT_LT(consecutive, 2);
  std::sort(ids.begin(), ids.end());
  EXPECT_EQ(std::adjacent_find(ids.begin(), ids.end()), ids.end());
}

}  // namespace prefix_cache_test
}  // namespace nanoserve

namespace nanoserve {
namespace prefix_cache_test {

// Every one of the 64 bits of a lease id varies: ids carry 64 random bits
// (a counter, a timestamp or a 32-bit draw would leave high bits fixed).
TEST(PrefixCacheLeaseTest, IdsCarrySixtyFourRandomBits) {
  auto cache = testing::MakeCache(/*page_size=*/1, /*num_pages=*/8);
  std::vector<int32_t> pages = cache->AllocatePages(1).value();
  ASSERT_TRUE(cache->Release(cache->Insert({5}, pages)->lease_id).ok());
  uint64_t ones = 0, zeros = 0;
  for (int i = 0; i < 256; ++i) {
    const uint64_t id = cache->Match({5}).lease_id;
    ones |= id;
    zeros |= ~id;
    ASSERT_TRUE(cache->Release(id).ok());
  }
  EXPECT_EQ(ones, ~uint64_t{0});
  EXPECT_EQ(zeros, ~uint64_t{0});
}

// A lease is the business of the identity that took it and the holder it
// was taken for; to anyone else it does not exist.
TEST(PrefixCacheLeaseTest, LeasesAreBoundToTheirCallerAndHolder) {
  auto cache = testing::MakeCache(/*page_size=*/1, /*num_pages=*/8);
  std::vector<int32_t> pages = cache->AllocatePages(2).value();
  auto inserted = cache->Insert({5, 6}, pages, "", "prefill", "decode");
  ASSERT_TRUE(inserted.ok()) << inserted.status();
  const uint64_t lease = inserted->lease_id;
  for (const char* stranger : {"", "client", "decodeX"}) {
    EXPECT_EQ(cache->LeasedPages(lease, stranger).status().code(), absl::StatusCode::kNotFound);
    EXPECT_EQ(cache->RenewLease(lease, stranger).code(), absl::StatusCode::kNotFound);
    EXPECT_EQ(cache->Release(lease, stranger).code(), absl::StatusCode::kNotFound);
  }
  EXPECT_EQ(cache->Stats().active_leases, 1);  // the strangers changed nothing
  EXPECT_EQ(*cache->LeasedPages(lease, "decode"), pages);
  EXPECT_TRUE(cache->RenewLease(lease, "prefill").ok());
  EXPECT_TRUE(cache->Release(lease, "decode").ok());

  // A Match lease belongs to its caller alone.
  PrefixCache::MatchResult m = cache->Match({5, 6}, "", "decode");
  ASSERT_EQ(m.matched_tokens, 2);
  EXPECT_EQ(cache->Release(m.lease_id, "prefill").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(cache->Release(m.lease_id).code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(cache->Release(m.lease_id, "decode").ok());
  EXPECT_TRUE(cache->CheckInvariants().ok()) << cache->CheckInvariants();
}

// The same tokens under two cache salts are two entries: no hit crosses.
TEST(PrefixCacheNamespaceTest, HitsNeverCrossCacheSalts) {
  auto cache = testing::MakeCache(/*page_size=*/2, /*num_pages=*/8);
  const std::vector<int32_t> tokens = {1, 2, 3, 4};
  auto insert = [&](const std::string& salt) {
    PrefixCache::MatchResult m = cache->Match(tokens, salt);
    std::vector<int32_t> pages = m.pages;
    std::vector<int32_t> fresh = cache->AllocatePages(2 - m.pages.size()).value();
    pages.insert(pages.end(), fresh.begin(), fresh.end());
    auto inserted = cache->Insert(tokens, pages, salt);
    EXPECT_TRUE(inserted.ok()) << inserted.status();
    EXPECT_TRUE(cache->Release(m.lease_id).ok());
    EXPECT_TRUE(cache->Release(inserted->lease_id).ok());
    return *inserted;
  };
  const PrefixCache::InsertResult a = insert("tenant-a");
  EXPECT_EQ(a.inserted_tokens, 4);
  for (const char* other : {"", "tenant-b", "tenant-"}) {
    PrefixCache::MatchResult m = cache->Match(tokens, other);
    EXPECT_EQ(m.matched_tokens, 0) << other;
    EXPECT_EQ(m.lease_id, PrefixCache::kNoLease);
  }
  PrefixCache::MatchResult same = cache->Match({1, 2, 3, 4, 5}, "tenant-a");
  EXPECT_EQ(same.matched_tokens, 4);
  EXPECT_EQ(same.pages, a.pages);
  ASSERT_TRUE(cache->Release(same.lease_id).ok());
  // Stored again under another salt: new pages, not tenant-a's.
  const PrefixCache::InsertResult b = insert("tenant-b");
  EXPECT_EQ(b.inserted_tokens, 4);
  for (int32_t page : b.pages) {
    EXPECT_EQ(std::count(a.pages.begin(), a.pages.end(), page), 0);
  }
  // A page of one namespace cannot be passed off as another's.
  EXPECT_EQ(cache->Insert(tokens, a.pages, "tenant-c").status().code(),
            absl::StatusCode::kInvalidArgument);
  const PrefixCacheStats stats = cache->Stats();
  EXPECT_EQ(stats.namespaces, 2);
  EXPECT_EQ(stats.pages_cached, 4);
  std::vector<std::string> salts;
  for (const CachedPath& path : cache->DumpPaths()) salts.push_back(path.cache_salt);
  std::sort(salts.begin(), salts.end());
  EXPECT_EQ(salts, (std::vector<std::string>{"tenant-a", "tenant-b"}));
  EXPECT_TRUE(cache->CheckInvariants().ok()) << cache->CheckInvariants();
}

// The namespaces share one pool: allocating for one evicts the least
// recently used pages of the others, and emptied namespaces disappear.
TEST(PrefixCacheNamespaceTest, EvictionWorksAcrossNamespaces) {
  auto cache = testing::MakeCache(/*page_size=*/1, /*num_pages=*/4);
  for (const char* salt : {"a", "b", "c", "d"}) {
    std::vector<int32_t> pages = cache->AllocatePages(1).value();
    ASSERT_TRUE(cache->Release(cache->Insert({7}, pages, salt)->lease_id).ok());
  }
  EXPECT_EQ(cache->Stats().pages_free, 0);
  ASSERT_TRUE(cache->Release(cache->Match({7}, "a").lease_id).ok());  // a: most recent
  PrefixCache::MatchResult pinned = cache->Match({7}, "b");           // b: pinned
  auto fresh = cache->AllocatePages(2);
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  EXPECT_EQ(cache->Match({7}, "c").matched_tokens, 0);  // the two oldest, unpinned
  EXPECT_EQ(cache->Match({7}, "d").matched_tokens, 0);
  PrefixCache::MatchResult a = cache->Match({7}, "a");
  EXPECT_EQ(a.matched_tokens, 1);
  EXPECT_EQ(cache->Stats().namespaces, 2);
  EXPECT_EQ(cache->AllocatePages(1).status().code(), absl::StatusCode::kResourceExhausted);
  ASSERT_TRUE(cache->Release(a.lease_id).ok());
  ASSERT_TRUE(cache->Release(pinned.lease_id).ok());
  ASSERT_TRUE(cache->FreePages(*fresh).ok());
  EXPECT_EQ(cache->EvictAll(), 2);
  EXPECT_EQ(cache->Stats().namespaces, 0);
  EXPECT_EQ(cache->Stats().pages_free, 4);
  EXPECT_TRUE(cache->CheckInvariants().ok()) << cache->CheckInvariants();
}

}  // namespace prefix_cache_test
}  // namespace nanoserve
