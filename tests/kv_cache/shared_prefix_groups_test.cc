// Which rows share leading pages (the decode step's shared-prefix
// attention, kv_cache/shared_prefix_groups.h): by the first page, the
// common pages of all the group's rows, never the page a row writes into,
// the limits on keys, rows and groups.
#include "kv_cache/shared_prefix_groups.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

namespace nanoserve {
namespace {

std::vector<const std::vector<int32_t>*> Pointers(const std::vector<std::vector<int32_t>>& tables) {
  std::vector<const std::vector<int32_t>*> out;
  for (const auto& t : tables) out.push_back(&t);
  return out;
}

SharedPrefixGroupLimits Limits(int64_t page_size, int64_t min_keys) {
  SharedPrefixGroupLimits l;
  l.page_size = page_size;
  l.min_keys = min_keys;
  return l;
}

TEST(SharedPrefixGroupsTest, RowsWithTheSameLeadingPagesShareTheirCommonWholePages) {
  // Rows 0, 2, 3 begin with pages 7, 8, 9 (row 3 with 7, 8 only, then its
  // own); row 1 and row 4 hold other pages; row 5 begins with row 4's page.
  const std::vector<std::vector<int32_t>> tables = {{7, 8, 9, 20}, {1, 2},   {7, 8, 9, 21, 22},
                                                    {7, 8, 30},    {40, 41}, {40, 50}};
  const std::vector<int64_t> lengths = {60, 20, 75, 40, 30, 20};
  const auto groups = SharedPrefixGroups(Pointers(tables), lengths, Limits(16, 16));
  ASSERT_EQ(groups.size(), 2u);
  EXPECT_EQ(groups[0].keys, 32);  // pages 7 and 8: row 3's third page is its own
  EXPECT_EQ(groups[0].rows, (std::vector<int64_t>{0, 2, 3}));
  EXPECT_EQ(groups[1].keys, 16);  // page 40
  EXPECT_EQ(groups[1].rows, (std::vector<int64_t>{4, 5}));
}

TEST(SharedPrefixGroupsTest, ThePageARowWritesIntoIsNeverShared) {
  // Both rows hold pages 3 and 4, but row 1 holds 20 tokens: its next one
  // goes into page 4 (position 20), which therefore is not shared; a row
  // of exactly 32 tokens writes into a third page and shares both.
  const std::vector<std::vector<int32_t>> tables = {{3, 4, 5}, {3, 4}};
  EXPECT_EQ(SharedPrefixGroups(Pointers(tables), std::vector<int64_t>{40, 20}, Limits(16, 16))
                .front()
                .keys,
            16);
  const std::vector<std::vector<int32_t>> full = {{3, 4, 5}, {3, 4, 6}};
  EXPECT_EQ(
      SharedPrefixGroups(Pointers(full), std::vector<int64_t>{40, 32}, Limits(16, 16)).front().keys,
      32);
}

TEST(SharedPrefixGroupsTest, LimitsOnKeysRowsAndGroups) {
  const std::vector<std::vector<int32_t>> tables = {{1, 2}, {1, 2}};
  // Fewer shared keys than min_keys: no group.
  EXPECT_TRUE(
      SharedPrefixGroups(Pointers(tables), std::vector<int64_t>{40, 40}, Limits(16, 64)).empty());
  // Seven rows on one prefix, groups of at most 3: 3, 3 and the last row alone.
  std::vector<std::vector<int32_t>> many(7, std::vector<int32_t>{5, 6, 7});
  SharedPrefixGroupLimits limits = Limits(16, 16);
  limits.max_rows = 3;
  auto groups = SharedPrefixGroups(Pointers(many), std::vector<int64_t>(7, 48), limits);
  ASSERT_EQ(groups.size(), 2u);
  EXPECT_EQ(groups[0].rows, (std::vector<int64_t>{0, 1, 2}));
  EXPECT_EQ(groups[1].rows, (std::vector<int64_t>{3, 4, 5}));
  EXPECT_EQ(groups[1].keys, 48);
  // At most one group: the rest attend alone.
  limits.max_groups = 1;
  EXPECT_EQ(SharedPrefixGroups(Pointers(many), std::vector<int64_t>(7, 48), limits).size(), 1u);
  // A row alone, and rows with no pages, are in no group.
  const std::vector<std::vector<int32_t>> alone = {{1}, {}, {}, {2}};
  EXPECT_TRUE(
      SharedPrefixGroups(Pointers(alone), std::vector<int64_t>{16, 0, 0, 16}, Limits(16, 16))
          .empty());
}

}  // namespace
}  // namespace nanoserve
