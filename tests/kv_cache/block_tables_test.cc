// Block tables over a PrefixCache's pool: pages allocated as rows grow, the
// tree's pages read in place and copied on write, adopted by the tree on
// Insert, and every page back in the pool after a reset.
#include "kv_cache/block_tables.h"

#include <gtest/gtest.h>

#include <numeric>
#include <vector>

#include "absl/strings/match.h"
#include "tests/test_util/prefix_cache.h"

namespace nanoserve {
namespace block_tables_test {

using testing::MakeCache;

std::vector<int32_t> Tokens(int n, int first = 1) {
  std::vector<int32_t> t(n);
  std::iota(t.begin(), t.end(), first);
  return t;
}

// The K/V values of a row's positions [0, n): the pool's single head_dim
// holds K then V of each position.
std::vector<float> RowValues(const BlockTables& rows, int64_t row, int64_t n) {
  const torch::Tensor kv = rows.ReadTokens(row, 0, n).value();  // (1, 2, 1, n, 1)
  const torch::Tensor k = kv[0][0][0].flatten().contiguous();
  return std::vector<float>(k.data_ptr<float>(), k.data_ptr<float>() + n);
}

// K = V = the position + `base`, for positions [begin, end) of a row.
void WriteRamp(BlockTables& rows, int64_t row, int64_t begin, int64_t end, float base) {
  torch::Tensor ramp = torch::arange(begin, end, torch::kFloat) + base;
  torch::Tensor kv = torch::stack({ramp, ramp}).view({1, 2, 1, end - begin, 1});
  ASSERT_TRUE(rows.WriteTokens(row, begin, kv).ok());
  rows.set_length(row, end);
}

// Bad sizes and a pool with no page to spare are statuses, not throws.
TEST(BlockTablesTest, CreateSaysWhyItCannot) {
  auto pool = MakeCache(/*page_size=*/4, /*num_pages=*/2);
  EXPECT_EQ(BlockTables::Create(pool.get(), 0, 16).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(BlockTables::Create(pool.get(), 1, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto first = BlockTables::Create(pool.get(), 1, 16);
  auto second = BlockTables::Create(pool.get(), 1, 16);
  ASSERT_TRUE(first.ok() && second.ok());  // a scratch page each
  auto third = BlockTables::Create(pool.get(), 1, 16);
  EXPECT_EQ(third.status().code(), absl::StatusCode::kResourceExhausted) << third.status();
  EXPECT_TRUE(absl::StrContains(third.status().message(), "scratch")) << third.status();
}

TEST(BlockTablesTest, RowsGrowPageByPageAndGiveEverythingBack) {
  auto pool = MakeCache(/*page_size=*/4, /*num_pages=*/8);
  {
    auto rows_owned = BlockTables::Create(pool.get(), 2, 16).value();
    BlockTables& rows = *rows_owned;  // takes a scratch page
    EXPECT_EQ(pool->Stats().pages_free, 7);
    ASSERT_TRUE(rows.PrepareWrite(0, 0, 5).ok());
    EXPECT_EQ(rows.pages(0).size(), 2u);
    WriteRamp(rows, 0, 0, 5, 100);
    ASSERT_TRUE(rows.PrepareWrite(0, 5, 8).ok());  // still two pages
    EXPECT_EQ(rows.pages(0).size(), 2u);
    WriteRamp(rows, 1, 0, 13, 200);
    EXPECT_EQ(rows.own_pages(), 6);
    EXPECT_EQ(RowValues(rows, 0, 5), (std::vector<float>{100, 101, 102, 103, 104}));
    EXPECT_EQ(RowValues(rows, 1, 13)[12], 212);
    // One page left: a row that needs two more gets none and keeps its own.
    EXPECT_EQ(rows.PrepareWrite(0, 8, 16).code(), absl::StatusCode::kResourceExhausted);
    EXPECT_EQ(rows.pages(0).size(), 2u);
    EXPECT_EQ(rows.PrepareWrite(0, 0, 17).code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(rows.CheckInvariants().ok());
    rows.Reset(1);
    EXPECT_EQ(pool->Stats().pages_free, 5);
    EXPECT_TRUE(rows.CheckInvariants().ok());
  }
  EXPECT_EQ(pool->Stats().pages_free, 8);
  EXPECT_TRUE(pool->CheckInvariants().ok());
}

TEST(BlockTablesTest, ATreeHitIsReadInPlaceAndCopiedOnWrite) {
  auto pool = MakeCache(4, 16);
  auto rows_owned = BlockTables::Create(pool.get(), 2, 32).value();
  BlockTables& rows = *rows_owned;
  const std::vector<int32_t> prompt = Tokens(8);
  // Row 0 computes 8 tokens; the tree adopts its two pages in place.
  WriteRamp(rows, 0, 0, 8, 10);
  const std::vector<int32_t> computed = rows.pages(0);
  auto inserted = pool->Insert(prompt, computed);
  ASSERT_TRUE(inserted.ok()) << inserted.status();
  EXPECT_EQ(inserted->pages, computed);  // adopted, not copied
  rows.AdoptInserted(0, inserted->pages, inserted->lease_id);
  EXPECT_EQ(rows.shared_pages(0), 2);
  EXPECT_EQ(rows.own_pages(), 0);

  // Row 1 matches the prefix and reads the same pages.
  PrefixCache::MatchResult hit = pool->Match(prompt);
  ASSERT_EQ(hit.matched_tokens, 8);
  ASSERT_TRUE(rows.AttachLease(1, hit.lease_id, 8).ok());
  ASSERT_TRUE(pool->Release(hit.lease_id).ok());  // the row holds its own lease
  EXPECT_EQ(rows.pages(1), computed);
  EXPECT_EQ(rows.length(1), 8);
  EXPECT_EQ(pool->Evict(100), 0);  // pinned by the rows

  // Rewriting position 6 of row 1 copies the page: the tree's stays.
  WriteRamp(rows, 1, 6, 8, 1000);
  EXPECT_NE(rows.pages(1)[1], computed[1]);
  EXPECT_EQ(rows.pages(1)[0], computed[0]);
  EXPECT_EQ(RowValues(rows, 1, 8), (std::vector<float>{10, 11, 12, 13, 14, 15, 1006, 1007}));
  EXPECT_EQ(RowValues(rows, 0, 8), (std::vector<float>{10, 11, 12, 13, 14, 15, 16, 17}));
  EXPECT_TRUE(rows.CheckInvariants().ok());

  rows.Reset(0);
  rows.Reset(1);
  EXPECT_EQ(pool->Stats().active_leases, 0);
  EXPECT_EQ(pool->Stats().pages_cached, 2);  // the tree keeps the prefix
  EXPECT_EQ(pool->Evict(100), 2);
  EXPECT_TRUE(pool->CheckInvariants().ok());
}

TEST(BlockTablesTest, InsertFreesDuplicatesAndTheRowReadsTheTreesPages) {
  auto pool = MakeCache(4, 16);
  auto rows_owned = BlockTables::Create(pool.get(), 2, 16).value();
  BlockTables& rows = *rows_owned;
  const std::vector<int32_t> prompt = Tokens(8);
  WriteRamp(rows, 0, 0, 8, 0);
  WriteRamp(rows, 1, 0, 8, 0);  // the same tokens, computed twice
  auto first = pool->Insert(prompt, rows.pages(0));
  ASSERT_TRUE(first.ok());
  rows.AdoptInserted(0, first->pages, first->lease_id);
  const int64_t free_before = pool->Stats().pages_free;
  auto second = pool->Insert(prompt, rows.pages(1));
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(second->pages, rows.pages(0));  // the tree's, not row 1's
  rows.AdoptInserted(1, second->pages, second->lease_id);
  EXPECT_EQ(pool->Stats().pages_free, free_before + 2);  // row 1's copies freed
  EXPECT_EQ(rows.pages(1), rows.pages(0));
  EXPECT_TRUE(rows.CheckInvariants().ok());
}

TEST(BlockTablesTest, ParkedRowsWriteIntoScratchAndHoldNothing) {
  auto pool = MakeCache(4, 4);
  auto rows_owned = BlockTables::Create(pool.get(), 3, 16).value();
  BlockTables& rows = *rows_owned;
  rows.Park(1);
  EXPECT_TRUE(rows.parked(1));
  EXPECT_EQ(rows.pages(1), std::vector<int32_t>{rows.scratch_page()});
  ASSERT_TRUE(rows.PrepareWrite(1, 0, 1).ok());  // a dummy token: no page taken
  EXPECT_EQ(rows.own_pages(), 0);
  ASSERT_TRUE(rows.PrepareWrite(0, 0, 4).ok());
  const torch::Tensor table = rows.TableTensor(3, 2);
  EXPECT_EQ(table[0][0].item<int>(), rows.pages(0)[0]);
  EXPECT_EQ(table[0][1].item<int>(), rows.scratch_page());  // padding
  EXPECT_EQ(table[2][0].item<int>(), rows.scratch_page());
  ASSERT_TRUE(rows.PrepareWrite(1, 0, 5).ok());  // unparked: real pages
  EXPECT_FALSE(rows.parked(1));
  EXPECT_EQ(rows.own_pages(), 3);
  EXPECT_TRUE(rows.CheckInvariants().ok());
}

TEST(BlockTablesTest, BadAttachmentsChangeNothing) {
  auto pool = MakeCache(4, 8);
  auto rows_owned = BlockTables::Create(pool.get(), 1, 16).value();
  BlockTables& rows = *rows_owned;
  EXPECT_EQ(rows.AttachLease(0, 12345, 4).code(), absl::StatusCode::kNotFound);
  const std::vector<int32_t> prompt = Tokens(4);
  auto pages = pool->AllocatePages(1);
  ASSERT_TRUE(pages.ok());
  auto inserted = pool->Insert(prompt, *pages);
  ASSERT_TRUE(inserted.ok());
  EXPECT_EQ(rows.AttachLease(0, inserted->lease_id, 8).code(),
            absl::StatusCode::kInvalidArgument);  // pins 4 tokens
  EXPECT_EQ(rows.AttachLease(0, inserted->lease_id, 3).code(),
            absl::StatusCode::kInvalidArgument);  // not whole pages
  EXPECT_TRUE(rows.pages(0).empty());
  ASSERT_TRUE(pool->Release(inserted->lease_id).ok());
  EXPECT_EQ(pool->Stats().active_leases, 0);
  EXPECT_TRUE(rows.CheckInvariants().ok());
}

// Pages of another pool (a store's, mapped) become a row's first pages,
// page to page: the row reads what the other pool held, in its own pages.
TEST(BlockTablesTest, CopyPagesInFillsARowFromAnotherPool) {
  auto pool = MakeCache(4, 8);
  auto other = MakeCache(4, 8);
  auto rows_owned = BlockTables::Create(pool.get(), 2, 16).value();
  BlockTables& rows = *rows_owned;
  auto source_rows = BlockTables::Create(other.get(), 1, 16).value();
  WriteRamp(*source_rows, 0, 0, 8, 100);
  const std::vector<int32_t> source = source_rows->pages(0);
  rows.Park(1);  // a parked row is unparked, not written into scratch
  ASSERT_TRUE(rows.CopyPagesIn(1, other->storage(), source).ok());
  EXPECT_FALSE(rows.parked(1));
  EXPECT_EQ(rows.length(1), 8);
  EXPECT_EQ(rows.own_pages(), 2);
  EXPECT_EQ(RowValues(rows, 1, 8), RowValues(*source_rows, 0, 8));
  // Not into a row holding tokens; not from pages of another shape.
  EXPECT_EQ(rows.CopyPagesIn(1, other->storage(), source).code(),
            absl::StatusCode::kInvalidArgument);
  auto wider = MakeCache(8, 4);
  EXPECT_EQ(rows.CopyPagesIn(0, wider->storage(), {0}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(rows.length(0), 0);
  EXPECT_EQ(rows.CopyPagesIn(0, other->storage(), {8}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(rows.length(0), 0);
  EXPECT_TRUE(rows.CheckInvariants().ok());
}

}  // namespace block_tables_test
}  // namespace nanoserve
