// The page index (kv_cache/page_index.h): keys that name a namespace and a
// token prefix, the same in every process; a set that holds them through
// churn and rebuilds against a reference multiset; a reader that says
// "unknown" during a rebuild; and a PrefixCache with an exported pool that
// keeps its index in step with the tree as a peer's mapping reads it.
#include "kv_cache/page_index.h"

#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <numeric>
#include <random>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "kv_cache/prefix_cache.h"
#include "kv_cache/shared_memory.h"

namespace nanoserve {
namespace page_index_test {

std::vector<int32_t> Tokens(int n, int start = 0) {
  std::vector<int32_t> t(static_cast<size_t>(n));
  std::iota(t.begin(), t.end(), start);
  return t;
}

// A cache of `pages` pages of 4 tokens, the smallest geometry.
PrefixCacheOptions CacheOptions(int64_t pages, bool exported) {
  PrefixCacheOptions options;
  options.pool.layout.page_size = 4;
  options.pool.layout.n_layer = 1;
  options.pool.layout.n_head = 1;
  options.pool.layout.head_dim = 1;
  options.pool.byte_budget = pages * options.pool.layout.bytes_per_page();
  options.pool.exported = exported;
  options.pool.epoch = NewEpoch();
  return options;
}

TEST(PageKeysTest, NameTheNamespaceAndEveryTokenUpToThePagesEnd) {
  const std::vector<int32_t> tokens = Tokens(40);
  const std::vector<uint64_t> keys = PageKeys("", tokens, 16);
  ASSERT_EQ(keys.size(), 2u);  // the partial third page has none
  // A prefix's keys are the longer sequence's first keys.
  EXPECT_EQ(PageKeys("", absl::MakeConstSpan(tokens).subspan(0, 16), 16)[0], keys[0]);
  // Another namespace, or one token changed before a page's end, another key.
  EXPECT_NE(PageKeys("tenant", tokens, 16)[0], keys[0]);
  std::vector<int32_t> changed = tokens;
  changed[3] = 999;
  EXPECT_NE(PageKeys("", changed, 16)[1], keys[1]);
  changed = tokens;
  changed[35] = 999;  // after page 1's end
  EXPECT_EQ(PageKeys("", changed, 16), keys);
  // The same in every process and build (a peer compares what the store
  // wrote): pinned values.
  EXPECT_EQ(keys[0], PageKeys("", Tokens(16), 16)[0]);
  EXPECT_EQ(PageKeys("", Tokens(4), 4)[0], 0xcdb8e918da09f350ULL);
  EXPECT_EQ(PageKeys("x", Tokens(4), 4)[0], 0x0607477445b91a07ULL);
}

TEST(PageIndexTest, HoldsWhatWasAddedThroughChurnAndRebuilds) {
  std::vector<uint64_t> words(static_cast<size_t>(PageIndex::WordsFor(32)), 0);
  PageIndex index(words.data(), static_cast<int64_t>(words.size()));
  std::map<uint64_t, int> reference;  // key -> copies
  std::mt19937_64 random(7);
  std::vector<uint64_t> pool;  // keys to draw from: few, so some repeat
  for (int i = 0; i < 48; ++i) pool.push_back(random() | 2);
  pool.push_back(0);  // markers' values are keys like any other
  pool.push_back(1);
  for (int step = 0; step < 20000; ++step) {
    const uint64_t key = pool[random() % pool.size()];
    int& copies = reference[key];
    if (copies > 0 && random() % 2 == 0) {
      index.Remove(key);
      --copies;
    } else if (index.live() < 32) {
      index.Add(key);
      ++copies;
    }
  }
  int64_t live = 0;
  for (const auto& [key, copies] : reference) {
    live += copies;
    const uint64_t one[] = {key};
    EXPECT_EQ(PageIndex::LeadingPresent(words.data(), static_cast<int64_t>(words.size()), one),
              copies > 0 ? 1 : 0)
        << key;
  }
  EXPECT_EQ(index.live(), live);
  EXPECT_EQ(words[0] % 2, 0u) << "a rebuild left the version odd";
  EXPECT_GT(words[0], 0u) << "the churn never rebuilt the table";
}

TEST(PageIndexTest, CountsLeadingKeysAndSaysUnknownDuringARebuild) {
  std::vector<uint64_t> words(static_cast<size_t>(PageIndex::WordsFor(8)), 0);
  const int64_t n = static_cast<int64_t>(words.size());
  PageIndex index(words.data(), n);
  const std::vector<uint64_t> keys = PageKeys("", Tokens(16), 4);  // 4 pages
  index.Add(keys[0]);
  index.Add(keys[1]);
  index.Add(keys[3]);
  EXPECT_EQ(PageIndex::LeadingPresent(words.data(), n, keys), 2);
  EXPECT_EQ(PageIndex::LeadingPresent(words.data(), n, {}), 0);
  index.Remove(keys[0]);
  EXPECT_EQ(PageIndex::LeadingPresent(words.data(), n, keys), 0);
  words[0] += 1;  // as while the writer rebuilds
  EXPECT_EQ(PageIndex::LeadingPresent(words.data(), n, keys), -1);
  words[0] += 1;
  EXPECT_EQ(PageIndex::LeadingPresent(words.data(), n, absl::MakeConstSpan(keys).subspan(1)), 1);
  // Words that are not a table: unknown, nothing read past them.
  EXPECT_EQ(PageIndex::LeadingPresent(words.data(), PageIndex::kHeaderWords, keys), -1);
  std::vector<uint64_t> garbage(words.size(), 0);
  garbage[1] = 12345;
  EXPECT_EQ(PageIndex::LeadingPresent(garbage.data(), n, keys), -1);
}

// A reader racing the writer never misses a key that stays in the set:
// while other keys come and go (and the table is rebuilt), a lookup of the
// staying keys answers all of them or "unknown", never fewer.
TEST(PageIndexTest, AReaderNeverMissesAKeyThatStaysWhileOthersChurn) {
  std::vector<uint64_t> words(static_cast<size_t>(PageIndex::WordsFor(64)), 0);
  const int64_t n = static_cast<int64_t>(words.size());
  PageIndex index(words.data(), n);
  const std::vector<uint64_t> staying = PageKeys("", Tokens(32), 4);  // 8 keys
  for (uint64_t key : staying) index.Add(key);
  std::atomic<bool> done{false};
  std::atomic<int64_t> lookups{0}, unknown{0}, missed{0};
  std::thread reader([&] {
    while (!done.load()) {
      const int64_t present = PageIndex::LeadingPresent(words.data(), n, staying);
      ++lookups;
      if (present < 0) ++unknown;
      if (present >= 0 && present != 8) ++missed;
    }
  });
  std::mt19937_64 random(11);
  std::vector<uint64_t> churn;
  // Until the reader has looked many times (bounded: a slow machine's
  // reader may start late).
  const absl::Time give_up = absl::Now() + absl::Seconds(20);
  for (int64_t step = 0; step < 200000 || (lookups.load() < 20000 && absl::Now() < give_up);
       ++step) {
    if (churn.size() < 48 && random() % 2 == 0) {
      churn.push_back(random() | 2);
      index.Add(churn.back());
    } else if (!churn.empty()) {
      index.Remove(churn.back());
      churn.pop_back();
    }
  }
  done = true;
  reader.join();
  EXPECT_EQ(missed.load(), 0) << "of " << lookups.load() << " lookups";
  EXPECT_GT(lookups.load(), unknown.load()) << "every lookup overlapped a rebuild";
  EXPECT_EQ(PageIndex::LeadingPresent(words.data(), n, staying), 8);
}

// A cache with an exported pool keeps the index beside it: a peer's mapping
// of it sees inserts, evictions and namespaces as Match would answer.
TEST(PageIndexTest, AnExportedCacheKeepsItsIndexInStepWithTheTree) {
  const PrefixCacheOptions options = CacheOptions(6, /*exported=*/true);
  auto created = PrefixCache::Create(options);
  ASSERT_TRUE(created.ok()) << created.status();
  PrefixCache& cache = **created;
  ASSERT_EQ(cache.index_segment().transport, KvTransport::kShm);
  auto mapped = MapExported(cache.index_segment(), {cache.index_words()}, torch::kInt64,
                            torch::kCPU, options.pool.epoch);
  ASSERT_TRUE(mapped.ok()) << mapped.status();
  const uint64_t* peer = reinterpret_cast<const uint64_t*>(mapped->data_ptr<int64_t>());
  auto peer_pages = [&](absl::Span<const int32_t> tokens, absl::string_view salt) {
    return PageIndex::LeadingPresent(peer, cache.index_words(), PageKeys(salt, tokens, 4));
  };

  const std::vector<int32_t> a = Tokens(12);
  auto pages = cache.AllocatePages(3).value();
  auto inserted = cache.Insert(a, pages, "", "");
  ASSERT_TRUE(inserted.ok()) << inserted.status();
  EXPECT_EQ(peer_pages(a, ""), 3);
  EXPECT_EQ(peer_pages(Tokens(14), ""), 3);  // a longer prompt: its first 3 pages
  EXPECT_EQ(peer_pages(a, "tenant"), 0);
  EXPECT_EQ(cache.IndexedPages(a, ""), 3);
  std::vector<int32_t> b = a;
  b[6] = 77;  // branches inside page 1
  EXPECT_EQ(peer_pages(b, ""), 1);
  const PrefixCache::MatchResult matched = cache.Match(b);
  EXPECT_EQ(peer_pages(b, ""), matched.matched_tokens / 4);
  ASSERT_TRUE(cache.Release(matched.lease_id).ok());

  ASSERT_TRUE(cache.Release(inserted->lease_id).ok());
  EXPECT_EQ(cache.Evict(1), 1);  // the leaf's tail: page 2
  EXPECT_EQ(peer_pages(a, ""), 2);
  EXPECT_EQ(cache.EvictAll(), 2);
  EXPECT_EQ(peer_pages(a, ""), 0);
  // Cached again in a namespace: there alone.
  pages = cache.AllocatePages(3).value();
  inserted = cache.Insert(a, pages, "tenant", "");
  ASSERT_TRUE(inserted.ok());
  EXPECT_EQ(peer_pages(a, "tenant"), 3);
  EXPECT_EQ(peer_pages(a, ""), 0);
  EXPECT_TRUE(cache.CheckInvariants().ok());
}

TEST(PageIndexTest, ACacheWhosePoolIsNotExportedHasNone) {
  auto cache = PrefixCache::Create(CacheOptions(2, /*exported=*/false)).value();
  EXPECT_EQ(cache->index_segment().transport, KvTransport::kBytes);
  EXPECT_EQ(cache->index_words(), 0);
  EXPECT_EQ(cache->IndexedPages(Tokens(8)), -1);
}

}  // namespace page_index_test
}  // namespace nanoserve
