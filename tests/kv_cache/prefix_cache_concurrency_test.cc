// Several threads run the prefill flow (match, allocate, write, insert,
// read, release) and evictions on one PrefixCache while another thread
// checks its invariants. Page contents carry a tag of the token prefix they
// belong to, so a page handed out twice or evicted while pinned shows up as
// a wrong tag.
#include <gtest/gtest.h>

#include <atomic>
#include <deque>
#include <random>
#include <thread>
#include <vector>

#include <torch/utils.h>

#include "kv_cache/prefix_cache.h"
#include "tests/test_util/prefix_cache.h"

namespace nanoserve {
namespace prefix_cache_concurrency_test {

using Tokens = std::vector<int32_t>;

constexpr int64_t kPageSize = 2;

struct Counts {
  std::atomic<int64_t> errors{0};     // unexpected statuses
  std::atomic<int64_t> corrupt{0};    // pages holding another prefix's K/V
  std::atomic<int64_t> exhausted{0};  // RESOURCE_EXHAUSTED allocations
  std::atomic<int64_t> hit_tokens{0};
};

// True if pages[i] holds the tag of t's first (i + 1) pages for every i.
bool PagesHoldPrefix(const PrefixCache& cache, const Tokens& t, const std::vector<int32_t>& pages) {
  return testing::PagesHoldPrefix(cache.storage(), t, pages, kPageSize);
}

void Worker(PrefixCache& cache, uint32_t seed, int ops, Counts& counts) {
  std::mt19937 rng(seed);
  auto rand = [&rng](int n) { return static_cast<int>(rng() % n); };
  std::deque<uint64_t> leases;
  auto release = [&](uint64_t id) {
    if (!cache.Release(id).ok()) ++counts.errors;
  };
  auto release_all = [&] {
    for (uint64_t id : leases) release(id);
    leases.clear();
  };
  static const Tokens kGranules[] = {{0, 1}, {0, 2}, {1, 1}};
  for (int op = 0; op < ops; ++op) {
    Tokens t;
    for (int i = 1 + rand(5); i > 0; --i) {
      const Tokens& g = kGranules[rand(3)];
      t.insert(t.end(), g.begin(), g.end());
    }
    const int kind = rand(10);
    if (kind < 6) {  // the prefill flow
      PrefixCache::MatchResult m = cache.Match(t);
      counts.hit_tokens += m.matched_tokens;
      if (!PagesHoldPrefix(cache, t, m.pages)) ++counts.corrupt;
      const int64_t need =
          static_cast<int64_t>(t.size()) / kPageSize - static_cast<int64_t>(m.pages.size());
      auto fresh = cache.AllocatePages(need);
      if (!fresh.ok()) {
        if (fresh.status().code() == absl::StatusCode::kResourceExhausted) {
          ++counts.exhausted;
        } else {
          ++counts.errors;
        }
        release(m.lease_id);
        release_all();
        continue;
      }
      std::vector<int32_t> pages = m.pages;
      for (int32_t page : *fresh) {
        pages.push_back(page);
        const Tokens prefix(t.begin(), t.begin() + pages.size() * kPageSize);
        testing::TagPage(cache.storage(), page, prefix);
      }
      auto inserted = cache.Insert(t, pages);
      release(m.lease_id);
      if (!inserted.ok()) {
        ++counts.errors;
        continue;
      }
      if (!PagesHoldPrefix(cache, t, inserted->pages)) ++counts.corrupt;
      leases.push_back(inserted->lease_id);
    } else if (kind < 8) {  // a reader
      PrefixCache::MatchResult m = cache.Match(t);
      if (!PagesHoldPrefix(cache, t, m.pages)) ++counts.corrupt;
      if (m.lease_id != PrefixCache::kNoLease) leases.push_back(m.lease_id);
    } else if (kind < 9) {  // a burst of tree-only work, to contend
      for (int i = 0; i < 20; ++i) {
        PrefixCache::MatchResult m = cache.Match(t);
        if (m.matched_tokens % kPageSize != 0 ||
            m.pages.size() * kPageSize != static_cast<size_t>(m.matched_tokens)) {
          ++counts.corrupt;
        }
        release(m.lease_id);
        t.resize(rand(static_cast<int>(t.size()) + 1));
      }
      cache.Evict(rand(3));
    } else {
      release_all();
    }
    while (leases.size() > 3) {
      release(leases.front());
      leases.pop_front();
    }
  }
  release_all();
}

TEST(PrefixCacheConcurrencyTest, ThreadsLeaveTheCacheConsistent) {
  constexpr int kThreads = 4;
  constexpr int kOps = 2000;
  constexpr int64_t kPages = 16;
  torch::set_num_threads(1);
  auto cache = testing::MakeCache(kPageSize, kPages);
  ASSERT_NE(cache, nullptr);
  Counts counts;
  std::atomic<bool> done{false};
  std::atomic<int64_t> checks{0}, broken{0};
  std::thread checker([&] {
    while (!done) {
      if (!cache->CheckInvariants().ok()) ++broken;
      ++checks;
      std::this_thread::yield();
    }
  });
  std::vector<std::thread> workers;
  for (int i = 0; i < kThreads; ++i) {
    workers.emplace_back(Worker, std::ref(*cache), 1000 + i, kOps, std::ref(counts));
  }
  for (std::thread& w : workers) w.join();
  done = true;
  checker.join();

  EXPECT_EQ(counts.errors, 0);
  EXPECT_EQ(counts.corrupt, 0);
  EXPECT_EQ(broken, 0);
  EXPECT_GT(checks, 10);
  EXPECT_GT(counts.hit_tokens, 0);
  EXPECT_GT(counts.exhausted, 0);  // the pool was under pressure
  ASSERT_TRUE(cache->CheckInvariants().ok()) << cache->CheckInvariants();
  PrefixCacheStats stats = cache->Stats();
  EXPECT_EQ(stats.active_leases, 0);
  EXPECT_EQ(stats.pages_pinned, 0);
  EXPECT_GT(stats.evicted_pages, 0);
  EXPECT_EQ(stats.pages_free + stats.pages_cached, kPages);  // none leaked
  cache->EvictAll();
  stats = cache->Stats();
  EXPECT_EQ(stats.pages_free, kPages);
  EXPECT_EQ(stats.nodes, 0);
}

}  // namespace prefix_cache_concurrency_test
}  // namespace nanoserve
