// SaveSnapshot / LoadSnapshot: a round trip keeps the paths, their pages'
// contents and the LRU order, and not the leases; a file of another model
// or layout, a truncated or corrupt one, or none is refused and leaves the
// cache empty; a smaller pool takes the most recent paths.
#include "kv_cache/snapshot.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>
#include <iterator>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "tests/test_util/prefix_cache.h"
#include "tests/test_util/temp_path.h"

namespace nanoserve {
namespace snapshot_test {

using ::nanoserve::testing::MakeCache;
using ::nanoserve::testing::PageHolds;
using ::nanoserve::testing::ProcessTempPath;
using ::nanoserve::testing::TagPage;
using Tokens = std::vector<int32_t>;

constexpr char kModel[] = "weights:0123456789abcdef";
constexpr int64_t kPageSize = 2;

// Caches `tokens` in `salt` with each page tagged with its prefix.
void Cache(PrefixCache& cache, const Tokens& tokens, const std::string& salt = "") {
  PrefixCache::MatchResult m = cache.Match(tokens, salt);
  const int64_t n_pages = static_cast<int64_t>(tokens.size()) / kPageSize;
  std::vector<int32_t> pages = m.pages;
  auto fresh = cache.AllocatePages(n_pages - static_cast<int64_t>(m.pages.size()));
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  for (size_t i = 0; i < fresh->size(); ++i) {
    const size_t at = m.pages.size() + i;
    TagPage(cache.storage(), (*fresh)[i],
            Tokens(tokens.begin(), tokens.begin() + (at + 1) * kPageSize));
    pages.push_back((*fresh)[i]);
  }
  auto inserted = cache.Insert(tokens, pages, salt);
  ASSERT_TRUE(inserted.ok()) << inserted.status();
  ASSERT_TRUE(cache.Release(inserted->lease_id).ok());
  ASSERT_TRUE(cache.Release(m.lease_id).ok());
}

// Every path of `cache` by (salt, tokens), and whether each of its pages
// holds its prefix's tag.
std::map<std::pair<std::string, Tokens>, bool> Contents(const PrefixCache& cache) {
  std::map<std::pair<std::string, Tokens>, bool> contents;
  for (const CachedPath& path : cache.DumpPaths()) {
    bool tagged = true;
    for (size_t i = 0; i < path.pages.size(); ++i) {
      const Tokens prefix(path.tokens.begin(), path.tokens.begin() + (i + 1) * kPageSize);
      tagged = tagged && PageHolds(cache.storage(), path.pages[i], testing::PrefixTag(prefix));
    }
    contents[{path.cache_salt, path.tokens}] = tagged;
  }
  return contents;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

class SnapshotTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = ProcessTempPath(
        absl::StrCat(::testing::UnitTest::GetInstance()->current_test_info()->name(), ".snapshot"));
    saved_ = MakeCache(kPageSize, /*num_pages=*/16);
    // Oldest first: a, then b (shares a's first page), then c in another
    // namespace; a is used again last, so b is now the oldest leaf.
    Cache(*saved_, {1, 2, 3, 4, 5, 6});
    Cache(*saved_, {1, 2, 7, 8});
    Cache(*saved_, {1, 2, 3, 4}, "tenant");
    Cache(*saved_, {1, 2, 3, 4, 5, 6});
  }
  void TearDown() override { unlink(path_.c_str()); }

  // A fresh cache like saved_'s, and the status of loading path_ into it.
  absl::Status LoadFresh(absl::string_view model = kModel, int64_t num_pages = 16) {
    loaded_ = MakeCache(kPageSize, num_pages);
    auto stats = LoadSnapshot(loaded_.get(), path_, model);
    if (stats.ok()) stats_ = *stats;
    return stats.status();
  }

  // The cache holds nothing, and is sound.
  void ExpectEmpty(const PrefixCache& cache) {
    const PrefixCacheStats stats = cache.Stats();
    EXPECT_EQ(stats.pages_in_use, 0);
    EXPECT_EQ(stats.active_leases, 0);
    EXPECT_TRUE(cache.CheckInvariants().ok()) << cache.CheckInvariants();
  }

  std::string path_;
  std::unique_ptr<PrefixCache> saved_;
  std::unique_ptr<PrefixCache> loaded_;
  SnapshotStats stats_;
};

TEST_F(SnapshotTest, RoundTripKeepsPathsPagesAndLruOrderButNoLeases) {
  // A lease at save time is not kept. (The Match makes b the newest path.)
  PrefixCache::MatchResult pinned = saved_->Match({1, 2, 7, 8});
  ASSERT_EQ(pinned.matched_tokens, 4);
  auto saved = SaveSnapshot(*saved_, path_, kModel);
  ASSERT_TRUE(saved.ok()) << saved.status();
  EXPECT_EQ(saved->paths, 3);
  EXPECT_EQ(saved->pages, 6);  // a's 3, b's [7 8], tenant's 2
  EXPECT_EQ(saved->tokens, 12);
  EXPECT_EQ(saved->file_bytes, static_cast<int64_t>(ReadFile(path_).size()));
  EXPECT_EQ(access((path_ + ".tmp").c_str(), F_OK), -1);  // renamed into place

  ASSERT_TRUE(LoadFresh().ok());
  EXPECT_EQ(stats_.paths, 3);
  EXPECT_EQ(stats_.pages, 6);
  EXPECT_EQ(stats_.tokens, 12);
  EXPECT_EQ(stats_.skipped_paths, 0);
  EXPECT_EQ(Contents(*loaded_), Contents(*saved_));
  for (const auto& [path, tagged] : Contents(*loaded_)) EXPECT_TRUE(tagged) << path.second.size();
  const PrefixCacheStats stats = loaded_->Stats();
  EXPECT_EQ(stats.pages_pinned, 0);
  EXPECT_EQ(stats.active_leases, 0);
  EXPECT_TRUE(loaded_->CheckInvariants().ok()) << loaded_->CheckInvariants();
  // Least recently used first, as saved: tenant's, a, b.
  const std::vector<CachedPath> order = loaded_->DumpPaths();
  ASSERT_EQ(order.size(), 3u);
  EXPECT_EQ(order[0].cache_salt, "tenant");
  EXPECT_EQ(order[1].tokens, (Tokens{1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(order[2].tokens, (Tokens{1, 2, 7, 8}));
  EXPECT_EQ(loaded_->Evict(1), 1);  // the oldest leaf's tail
  EXPECT_EQ(loaded_->Match({1, 2, 3, 4}, "tenant").matched_tokens, 2);
  EXPECT_EQ(loaded_->Match({1, 2, 3, 4, 5, 6, 9}).matched_tokens, 6);
  EXPECT_EQ(loaded_->Match({1, 2, 7, 8}).matched_tokens, 4);
  EXPECT_TRUE(saved_->Release(pinned.lease_id).ok());
}

// A store restarted warm into an exported pool indexes what it restored,
// so peers see those pages as cached (kv_cache/page_index.h) and ask for
// them.
TEST_F(SnapshotTest, ARestoredExportedCacheIndexesWhatItLoaded) {
  ASSERT_TRUE(SaveSnapshot(*saved_, path_, kModel).ok());
  PrefixCacheOptions options = saved_->options();
  options.pool.exported = true;
  options.pool.epoch = NewEpoch();
  auto exported = PrefixCache::Create(options);
  ASSERT_TRUE(exported.ok()) << exported.status();
  ASSERT_EQ((*exported)->index_segment().transport, KvTransport::kShm);
  ASSERT_TRUE(LoadSnapshot(exported->get(), path_, kModel).ok());
  EXPECT_EQ((*exported)->IndexedPages({1, 2, 3, 4, 5, 6, 9}), 3);
  EXPECT_EQ((*exported)->IndexedPages({1, 2, 7, 8}), 2);
  EXPECT_EQ((*exported)->IndexedPages({1, 2, 3, 4}, "tenant"), 2);
  EXPECT_EQ((*exported)->IndexedPages({9, 9, 9, 9}), 0);
}

TEST_F(SnapshotTest, AnEmptyCacheRoundTripsToAnEmptyCache) {
  auto empty = MakeCache(kPageSize, 4);
  ASSERT_TRUE(SaveSnapshot(*empty, path_, kModel).ok());
  ASSERT_TRUE(LoadFresh().ok());
  EXPECT_EQ(stats_.paths, 0);
  ExpectEmpty(*loaded_);
}

TEST_F(SnapshotTest, AnotherModelOrLayoutIsRefusedAndTheCacheStaysEmpty) {
  ASSERT_TRUE(SaveSnapshot(*saved_, path_, kModel).ok());
  absl::Status other_model = LoadFresh("weights:fedcba9876543210");
  EXPECT_EQ(other_model.code(), absl::StatusCode::kFailedPrecondition) << other_model;
  EXPECT_NE(other_model.message().find("fedcba9876543210"), std::string::npos) << other_model;
  ExpectEmpty(*loaded_);

  PrefixCacheOptions base = saved_->options();
  std::vector<PrefixCacheOptions> others(4, base);
  others[0].pool.layout.page_size = 4;
  others[1].pool.layout.n_head = 2;
  others[2].pool.layout.dtype = torch::kBFloat16;
  others[3].pool.layout.n_layer = 3;
  for (PrefixCacheOptions& options : others) {
    options.pool.byte_budget = 16 * options.pool.layout.bytes_per_page();
    auto cache = PrefixCache::Create(options);
    ASSERT_TRUE(cache.ok()) << cache.status();
    auto loaded = LoadSnapshot(cache->get(), path_, kModel);
    EXPECT_EQ(loaded.status().code(), absl::StatusCode::kFailedPrecondition)
        << options.pool.layout.ToString() << ": " << loaded.status();
    ExpectEmpty(**cache);
  }
}

TEST_F(SnapshotTest, NoFileIsNotFound) {
  EXPECT_EQ(LoadFresh().code(), absl::StatusCode::kNotFound);
  ExpectEmpty(*loaded_);
}

TEST_F(SnapshotTest, EveryTruncationIsDataLossAndLeavesTheCacheEmpty) {
  ASSERT_TRUE(SaveSnapshot(*saved_, path_, kModel).ok());
  const std::string whole = ReadFile(path_);
  for (size_t length = 0; length < whole.size(); ++length) {
    WriteFile(path_, whole.substr(0, length));
    absl::Status status = LoadFresh();
    EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << length << ": " << status;
    ExpectEmpty(*loaded_);
  }
  WriteFile(path_, whole + "x");  // longer than it says
  EXPECT_EQ(LoadFresh().code(), absl::StatusCode::kDataLoss);
  WriteFile(path_, whole);
  EXPECT_TRUE(LoadFresh().ok());
}

// Every byte is covered by a CRC or a check: flipping any one is refused.
TEST_F(SnapshotTest, EveryFlippedByteIsRefusedAndLeavesTheCacheEmpty) {
  ASSERT_TRUE(SaveSnapshot(*saved_, path_, kModel).ok());
  const std::string whole = ReadFile(path_);
  for (size_t at = 0; at < whole.size(); ++at) {
    std::string bad = whole;
    bad[at] = static_cast<char>(bad[at] ^ 0x10);
    WriteFile(path_, bad);
    absl::Status status = LoadFresh();
    EXPECT_FALSE(status.ok()) << "byte " << at << " of " << whole.size();
    EXPECT_NE(status.code(), absl::StatusCode::kNotFound) << at;
    ExpectEmpty(*loaded_);
  }
}

TEST_F(SnapshotTest, ASmallerPoolTakesTheMostRecentPathsThatFit) {
  ASSERT_TRUE(SaveSnapshot(*saved_, path_, kModel).ok());
  // 3 pages: a (3 pages, newest) fits; tenant's (2) does not; b (needs 1
  // more after a's [1 2]) does not either.
  ASSERT_TRUE(LoadFresh(kModel, /*num_pages=*/3).ok());
  EXPECT_EQ(stats_.paths, 1);
  EXPECT_EQ(stats_.skipped_paths, 2);
  EXPECT_EQ(loaded_->Match({1, 2, 3, 4, 5, 6}).matched_tokens, 6);
  EXPECT_EQ(loaded_->Match({1, 2, 3, 4}, "tenant").matched_tokens, 0);
  EXPECT_TRUE(loaded_->CheckInvariants().ok()) << loaded_->CheckInvariants();
}

TEST_F(SnapshotTest, ACacheThatHoldsSomethingIsNotLoadedInto) {
  ASSERT_TRUE(SaveSnapshot(*saved_, path_, kModel).ok());
  auto loaded = LoadSnapshot(saved_.get(), path_, kModel);
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(SnapshotTest, ASaveThatCannotBeWrittenFailsAndKeepsThePreviousSnapshot) {
  ASSERT_TRUE(SaveSnapshot(*saved_, path_, kModel).ok());
  const std::string before = ReadFile(path_);
  EXPECT_FALSE(SaveSnapshot(*saved_, "/nonexistent_dir/kv.snapshot", kModel).ok());
  EXPECT_EQ(
      SaveSnapshot(*saved_, path_, std::string(kMaxFingerprintBytes + 1, 'x')).status().code(),
      absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ReadFile(path_), before);
  // A save over it replaces it whole.
  auto empty = MakeCache(kPageSize, 4);
  ASSERT_TRUE(SaveSnapshot(*empty, path_, kModel).ok());
  EXPECT_LT(ReadFile(path_).size(), before.size());
  EXPECT_EQ(access((path_ + ".tmp").c_str(), F_OK), -1);
}

// The standard check value, on whichever path this CPU takes, and chained
// calls equal one call.
TEST(Crc32cTest, MatchesTheCheckValueAndChains) {
  const std::string digits = "123456789";
  EXPECT_EQ(Crc32c(0, digits.data(), digits.size()), 0xe3069283u);
  std::string bytes(1000, '\0');
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<char>(i * 7 + 3);
  const uint32_t whole = Crc32c(0, bytes.data(), bytes.size());
  for (size_t cut : {0, 1, 7, 8, 9, 500, 999}) {
    EXPECT_EQ(Crc32c(Crc32c(0, bytes.data(), cut), bytes.data() + cut, bytes.size() - cut), whole)
        << cut;
  }
  EXPECT_NE(Crc32c(0, bytes.data(), bytes.size() - 1), whole);
}

}  // namespace snapshot_test
}  // namespace nanoserve
