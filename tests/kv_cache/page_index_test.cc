// The page index (kv_cache/page_index.h): keys that name a namespace and a
// token prefix, the same in every process; a table that finds each
// prompt's pages through churn and rebuilds, checking what each page
// holds; a reader that says "unknown" during a rebuild; lease-free reads
// that an eviction invalidates, raced against a writer; and a PrefixCache
// with an exported pool that keeps its index in step with the tree as a
// peer's mapping reads it.
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
  const std::vector<uint64_t> keys = PageKeys(0, "", tokens, 16);
  ASSERT_EQ(keys.size(), 2u);  // the partial third page has none
  // A prefix's keys are the longer sequence's first keys.
  EXPECT_EQ(PageKeys(0, "", absl::MakeConstSpan(tokens).subspan(0, 16), 16)[0], keys[0]);
  // Another namespace or seed, or one token changed before a page's end,
  // another key.
  EXPECT_NE(PageKeys(0, "tenant", tokens, 16)[0], keys[0]);
  EXPECT_NE(PageKeys(5, "", tokens, 16)[0], keys[0]);
  std::vector<int32_t> changed = tokens;
  changed[3] = 999;
  EXPECT_NE(PageKeys(0, "", changed, 16)[1], keys[1]);
  changed = tokens;
  changed[35] = 999;  // after page 1's end
  EXPECT_EQ(PageKeys(0, "", changed, 16), keys);
  // The same in every process and build (a peer computes what the store
  // wrote): pinned values.
  EXPECT_EQ(PageKeys(0, "", Tokens(4), 4)[0], 0xcdb8e918da09f350ULL);
  EXPECT_EQ(PageKeys(0, "x", Tokens(4), 4)[0], 0x0607477445b91a07ULL);
}

// An index of `pages` pages of 4 tokens in `words`.
struct Index {
  explicit Index(int64_t pages, uint64_t seed = 17)
      : words(static_cast<size_t>(PageIndex::WordsFor(pages, 4)), 0),
        index(words.data(), n(), pages, 4, seed) {}
  int64_t n() const { return static_cast<int64_t>(words.size()); }
  // Find's pages, or {-1} for unknown.
  std::vector<int32_t> Pages(absl::Span<const int32_t> tokens, absl::string_view salt = "") const {
    const auto found = PageIndex::Find(words.data(), n(), salt, tokens);
    if (!found.has_value()) return {-1};
    std::vector<int32_t> pages;
    for (const PageIndex::Found& f : *found) pages.push_back(f.page);
    return pages;
  }
  std::vector<uint64_t> words;
  PageIndex index;
};

// Prompts of 1-3 pages added and their pages removed at random (pages
// reused as a pool reuses them, the table rebuilt as it fills): Find gives
// each prompt exactly its leading pages still indexed.
TEST(PageIndexTest, FindsEachPromptsLeadingPagesThroughChurnAndRebuilds) {
  Index index(64);
  struct Prompt {
    std::vector<int32_t> tokens, pages;
    std::string salt;
    size_t indexed = 0;  // leading pages still in
  };
  std::vector<Prompt> prompts;
  std::vector<int32_t> free_pages(64);
  std::iota(free_pages.begin(), free_pages.end(), 0);
  std::mt19937_64 random(7);
  for (int step = 0; step < 20000; ++step) {
    const bool add = prompts.empty() || (free_pages.size() >= 3 && random() % 2 == 0);
    if (add) {
      Prompt p;
      const int n_pages = 1 + static_cast<int>(random() % 3);
      // The first token its own, as the tree keeps one page per prefix.
      p.tokens.push_back(1000 + step);
      for (int i = 1; i < 4 * n_pages; ++i) p.tokens.push_back(static_cast<int32_t>(random() % 5));
      p.salt = random() % 4 == 0 ? "tenant" : "";
      for (int i = 0; i < n_pages; ++i) {
        p.pages.push_back(free_pages.back());
        free_pages.pop_back();
      }
      p.indexed = p.pages.size();
      index.index.Add(p.salt, p.tokens, p.pages, 0);
      prompts.push_back(p);
    } else {  // the last page of a prompt goes, as the tree evicts leaves
      const size_t k = random() % prompts.size();
      Prompt& p = prompts[k];
      index.index.Remove(p.pages[p.indexed - 1]);
      free_pages.push_back(p.pages[p.indexed - 1]);
      if (--p.indexed == 0) prompts.erase(prompts.begin() + static_cast<int64_t>(k));
    }
    if (step % 97 == 0) {
      for (const Prompt& p : prompts) {
        ASSERT_EQ(index.Pages(p.tokens, p.salt),
                  std::vector<int32_t>(p.pages.begin(), p.pages.begin() + p.indexed))
            << "step " << step;
        ASSERT_EQ(index.Pages(p.tokens, p.salt == "" ? "tenant" : ""), std::vector<int32_t>{});
      }
    }
  }
  int64_t live = 0;
  for (const Prompt& p : prompts) live += static_cast<int64_t>(p.indexed);
  EXPECT_EQ(index.index.live(), live);
  EXPECT_EQ(index.words[0] % 2, 0u) << "a rebuild left the version odd";
  EXPECT_GT(index.words[0], 0u) << "the churn never rebuilt the table";
}

// Find checks what each page holds: its tokens, namespace and the page
// before it, so a page whose record disagrees (as a colliding key would
// present it) is not found; and it says "unknown" during a rebuild or for
// words that are not an index.
TEST(PageIndexTest, FindsOnlyPagesThatHoldThePromptAndSaysUnknownDuringARebuild) {
  Index index(8);
  const std::vector<int32_t> a = Tokens(16);  // 4 pages
  index.index.Add("", a, {3, 5, 6, 7}, 0);
  EXPECT_EQ(index.Pages(a), (std::vector<int32_t>{3, 5, 6, 7}));
  EXPECT_EQ(index.Pages(absl::MakeConstSpan(a).first(10)), (std::vector<int32_t>{3, 5}));
  EXPECT_EQ(index.Pages(a, "tenant"), std::vector<int32_t>{});
  EXPECT_EQ(index.Pages({}), std::vector<int32_t>{});
  // A prompt branching in page 2 shares page 1 (the tree adds its own
  // pages after it).
  std::vector<int32_t> b = a;
  b[5] = 99;
  index.index.Add("", b, {3, 1, 2}, 1);
  EXPECT_EQ(index.Pages(b), (std::vector<int32_t>{3, 1, 2}));
  EXPECT_EQ(index.Pages(a), (std::vector<int32_t>{3, 5, 6, 7}));
  // Page 6's record altered under its key: its tokens no longer a's.
  const int64_t slots = static_cast<int64_t>(index.words[1]);
  const int64_t record_words = 4 + 2;
  index.words[PageIndex::kHeaderWords + slots + 6 * record_words + 4] ^= 1;
  EXPECT_EQ(index.Pages(a), (std::vector<int32_t>{3, 5}));
  index.words[PageIndex::kHeaderWords + slots + 6 * record_words + 4] ^= 1;
  // Page 5's record naming another page before it.
  index.words[PageIndex::kHeaderWords + slots + 5 * record_words + 2] = 2 + 1;
  EXPECT_EQ(index.Pages(a), (std::vector<int32_t>{3}));
  index.words[PageIndex::kHeaderWords + slots + 5 * record_words + 2] = 3 + 1;
  EXPECT_EQ(index.Pages(a).size(), 4u);
  index.index.Remove(3);
  EXPECT_EQ(index.Pages(a), std::vector<int32_t>{});
  index.words[0] += 1;  // as while the writer rebuilds
  EXPECT_EQ(index.Pages(b), std::vector<int32_t>{-1});
  index.words[0] += 1;
  // Words that are not an index: unknown, nothing read past them.
  EXPECT_FALSE(PageIndex::Find(index.words.data(), PageIndex::kHeaderWords, "", a).has_value());
  std::vector<uint64_t> garbage = index.words;
  garbage[1] = 12345;
  EXPECT_FALSE(PageIndex::Find(garbage.data(), index.n(), "", a).has_value());
  garbage = index.words;
  garbage[3] = 1 << 30;  // more records than the words hold
  EXPECT_FALSE(PageIndex::Find(garbage.data(), index.n(), "", a).has_value());
  garbage.assign(index.words.size(), 0);
  EXPECT_FALSE(PageIndex::Find(garbage.data(), index.n(), "", a).has_value());
}

// A page removed (evicted) after Find fails Unchanged, even once it is
// indexed again under the same prompt; one untouched passes.
TEST(PageIndexTest, APageRemovedAfterFindFailsUnchanged) {
  Index index(8);
  const std::vector<int32_t> a = Tokens(8);
  index.index.Add("", a, {0, 1}, 0);
  const auto found = PageIndex::Find(index.words.data(), index.n(), "", a);
  ASSERT_TRUE(found.has_value());
  ASSERT_EQ(found->size(), 2u);
  EXPECT_TRUE(PageIndex::Unchanged(index.words.data(), index.n(), *found));
  index.index.Remove(1);
  EXPECT_FALSE(PageIndex::Unchanged(index.words.data(), index.n(), *found));
  index.index.Add("", a, {0, 1}, 1);
  EXPECT_FALSE(PageIndex::Unchanged(index.words.data(), index.n(), *found));
  EXPECT_TRUE(PageIndex::Unchanged(index.words.data(), index.n(), {&(*found)[0], 1}));
  index.index.Remove(5);  // not indexed: nothing changes
  EXPECT_TRUE(PageIndex::Unchanged(index.words.data(), index.n(), {&(*found)[0], 1}));
  // A restored index (the same words) keeps its seed: what it holds is found.
  PageIndex again(index.words.data(), index.n(), 8, 4, /*seed=*/99);
  EXPECT_EQ(again.seed(), index.index.seed());
  EXPECT_EQ(again.live(), 2);
  EXPECT_EQ(index.Pages(a), (std::vector<int32_t>{0, 1}));
}

// The lease-free read against a writer that evicts pages and hands them to
// other prompts (writing their content first, as a writer does after the
// store reserves a page): a reader that finds a prompt, copies its pages'
// content and then sees them Unchanged has copied exactly that prompt's
// content, never another's; and a prompt that stays is always found whole
// (or the lookup says unknown during a rebuild).
TEST(PageIndexTest, ALeaseFreeReadThatFindsItsPagesUnchangedCopiedThem) {
  constexpr int64_t kPages = 48;
  Index index(kPages);
  std::vector<std::atomic<uint64_t>> content(kPages);  // a page's K/V, as a number
  auto value = [](absl::Span<const int32_t> tokens, int64_t page) {
    uint64_t h = 0;
    for (int64_t i = 0; i < (page + 1) * 4; ++i) h = h * 31 + static_cast<uint64_t>(tokens[i]) + 1;
    return h;
  };
  auto write = [&](absl::Span<const int32_t> tokens, absl::Span<const int32_t> pages) {
    for (size_t i = 0; i < pages.size(); ++i) content[pages[i]] = value(tokens, i);
  };
  const std::vector<int32_t> staying = Tokens(32), victim = Tokens(16, 1000);
  std::vector<int32_t> staying_pages(8), victim_pages = {8, 9, 10, 11};
  std::iota(staying_pages.begin(), staying_pages.end(), 0);
  write(staying, staying_pages);
  index.index.Add("", staying, staying_pages, 0);
  std::atomic<bool> done{false};
  std::atomic<int64_t> reads{0}, good{0}, wrong{0}, missed{0};
  std::thread reader([&] {
    while (!done.load()) {
      ++reads;
      const auto found = PageIndex::Find(index.words.data(), index.n(), "", victim);
      if (found.has_value() && !found->empty()) {
        std::vector<uint64_t> copy;
        for (const PageIndex::Found& f : *found) copy.push_back(content[f.page].load());
        if (PageIndex::Unchanged(index.words.data(), index.n(), *found)) {
          ++good;
          for (size_t i = 0; i < copy.size(); ++i) {
            if (copy[i] != value(victim, static_cast<int64_t>(i))) ++wrong;
          }
        }
      }
      const auto whole = PageIndex::Find(index.words.data(), index.n(), "", staying);
      if (whole.has_value() && whole->size() != 8) ++missed;
    }
  });
  std::mt19937_64 random(11);
  const absl::Time give_up = absl::Now() + absl::Seconds(20);
  for (int64_t step = 0; step < 20000 || (reads.load() < 20000 && absl::Now() < give_up); ++step) {
    // The victim cached (for at least two of the reader's reads, so that
    // some find it whole however the threads are scheduled), then evicted
    // and its pages given to a prompt of other tokens (random, so that its
    // keys differ), and back.
    write(victim, victim_pages);
    index.index.Add("", victim, victim_pages, 0);
    const int64_t seen = reads.load();
    while (reads.load() < seen + 2 && absl::Now() < give_up) std::this_thread::yield();
    for (int i = 3; i >= 0; --i) index.index.Remove(victim_pages[static_cast<size_t>(i)]);
    std::vector<int32_t> other(16);
    for (int32_t& t : other) t = static_cast<int32_t>(random() % 50);
    write(other, victim_pages);
    index.index.Add("", other, victim_pages, 0);
    for (int i = 3; i >= 0; --i) index.index.Remove(victim_pages[static_cast<size_t>(i)]);
    std::shuffle(victim_pages.begin(), victim_pages.end(), random);
  }
  done = true;
  reader.join();
  EXPECT_EQ(wrong.load(), 0) << "of " << good.load() << " reads found unchanged";
  EXPECT_GT(good.load(), 0) << "no read of the victim ever succeeded, of " << reads.load();
  EXPECT_EQ(missed.load(), 0);
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
  auto peer_pages = [&](absl::Span<const int32_t> tokens, absl::string_view salt) -> int64_t {
    const auto found = PageIndex::Find(peer, cache.index_words(), salt, tokens);
    return found.has_value() ? static_cast<int64_t>(found->size()) : -1;
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
