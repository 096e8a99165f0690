// The page layout module against a plain per-token reference: batched
// pages <-> rows copies, pool <-> staged runs, and the wire's bytes.
#include "kv_store/page_layout.h"

#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

namespace nanoserve {
namespace {

using torch::indexing::Slice;

PageLayout SmallLayout() {
  PageLayout layout;
  layout.n_layer = 2;
  layout.n_head = 3;
  layout.head_dim = 5;
  layout.page_size = 4;
  return layout;
}

// Per layer K and V of `batch` rows of `capacity` positions, random.
struct Rows {
  std::vector<torch::Tensor> k, v;
  RowsKv view() const { return {k, v}; }
};
Rows RandomRows(const PageLayout& l, int64_t batch, int64_t capacity) {
  Rows rows;
  for (int64_t i = 0; i < l.n_layer; ++i) {
    rows.k.push_back(torch::randn({batch, l.n_head, capacity, l.head_dim}));
    rows.v.push_back(torch::randn({batch, l.n_head, capacity, l.head_dim}));
  }
  return rows;
}

torch::Tensor RandomPages(const PageLayout& l, int64_t n) { return torch::randn(l.shape(n)); }

// True if every token of every run agrees between pages and rows.
bool RunsAgree(const torch::Tensor& pages, const std::vector<PageRun>& runs, const Rows& rows,
               int64_t page_size) {
  for (const PageRun& run : runs) {
    for (size_t i = 0; i < run.pages.size(); ++i) {
      for (int64_t j = 0; j < page_size; ++j) {
        const int64_t pos = run.begin + static_cast<int64_t>(i) * page_size + j;
        for (size_t l = 0; l < rows.k.size(); ++l) {
          const auto page = pages[run.pages[i]][l];  // (2, H, P, D)
          if (!torch::equal(page[0].select(1, j), rows.k[l][run.row].select(1, pos)) ||
              !torch::equal(page[1].select(1, j), rows.v[l][run.row].select(1, pos))) {
            return false;
          }
        }
      }
    }
  }
  return true;
}

TEST(PageLayoutTest, SizesAndValidation) {
  PageLayout l = SmallLayout();
  EXPECT_EQ(l.bytes_per_page(), 2 * 2 * 3 * 4 * 5 * 4);
  l.dtype = torch::kBFloat16;
  EXPECT_EQ(l.bytes_per_page(), 2 * 2 * 3 * 4 * 5 * 2);
  EXPECT_EQ(l.shape(7), (std::vector<int64_t>{7, 2, 2, 3, 4, 5}));
  EXPECT_TRUE(l.Validate().ok());
  l.head_dim = 0;
  EXPECT_EQ(l.Validate().code(), absl::StatusCode::kInvalidArgument);
  l = SmallLayout();
  l.page_size = 1 << 20;
  EXPECT_EQ(l.Validate().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(SmallLayout(), l);
}

// Found with tests/fuzz/kv_wire_fuzzer: each size within its limit, but the
// page's bytes overflowed int64 (undefined behaviour) for a layout a peer sent.
TEST(PageLayoutTest, LayoutsWithPagesTooLargeToCountAreRefused) {
  PageLayout l = SmallLayout();
  l.n_layer = l.n_head = l.head_dim = l.page_size = 65536;
  EXPECT_EQ(l.Validate().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PagesFromBytes(l, "").status().code(), absl::StatusCode::kInvalidArgument);
  l.n_layer = l.n_head = 1;  // 2^32 * 2 * 4 bytes: large but countable
  EXPECT_TRUE(l.Validate().ok());
}

TEST(PageLayoutTest, LoadRunsCopiesEveryTokenOfEveryRun) {
  const PageLayout l = SmallLayout();
  const torch::Tensor pages = RandomPages(l, 10);
  Rows rows = RandomRows(l, 3, 32);
  const std::vector<PageRun> runs = {{0, 0, {3, 1, 7}}, {2, 4, {}}, {1, 8, {9, 0}}};
  ASSERT_TRUE(LoadRuns(pages, runs, rows.view()).ok());
  EXPECT_TRUE(RunsAgree(pages, runs, rows, l.page_size));
  // Untouched positions stay as they were.
  Rows again = rows;
  for (auto& t : again.k) t = t.clone();
  ASSERT_TRUE(LoadRuns(RandomPages(l, 10), {}, again.view()).ok());
  EXPECT_TRUE(torch::equal(again.k[1], rows.k[1]));
}

TEST(PageLayoutTest, StoreRunsWritesOnlyTheirPages) {
  const PageLayout l = SmallLayout();
  const Rows rows = RandomRows(l, 3, 32);
  torch::Tensor pages = RandomPages(l, 10);
  const torch::Tensor before = pages.clone();
  const std::vector<PageRun> runs = {{0, 4, {5, 2}}, {2, 0, {8}}};
  ASSERT_TRUE(StoreRuns(rows.view(), runs, pages).ok());
  EXPECT_TRUE(RunsAgree(pages, runs, rows, l.page_size));
  for (int64_t p : {0, 1, 3, 4, 6, 7, 9}) EXPECT_TRUE(torch::equal(pages[p], before[p])) << p;
}

TEST(PageLayoutTest, CopiesConvertDtypes) {
  const PageLayout l = SmallLayout();
  Rows rows = RandomRows(l, 1, 8);
  torch::Tensor pages = RandomPages(l, 2).to(torch::kDouble);
  ASSERT_TRUE(StoreRuns(rows.view(), {{0, 0, {1, 0}}}, pages).ok());
  EXPECT_TRUE(
      torch::equal(pages[1][0][0].select(1, 0).to(torch::kFloat), rows.k[0][0].select(1, 0)));
}

TEST(PageLayoutTest, BadRunsChangeNothing) {
  const PageLayout l = SmallLayout();
  Rows rows = RandomRows(l, 2, 8);
  torch::Tensor pages = RandomPages(l, 4);
  const torch::Tensor before = pages.clone();
  auto code = [](const absl::Status& s) { return s.code(); };
  const auto kInvalid = absl::StatusCode::kInvalidArgument;
  EXPECT_EQ(code(StoreRuns(rows.view(), {{0, 0, {4}}}, pages)), kInvalid);     // out of range
  EXPECT_EQ(code(StoreRuns(rows.view(), {{0, 0, {1, 1}}}, pages)), kInvalid);  // twice
  EXPECT_EQ(code(StoreRuns(rows.view(), {{0, 4, {1, 2}}}, pages)), kInvalid);  // past capacity
  EXPECT_EQ(code(StoreRuns(rows.view(), {{2, 0, {1}}}, pages)), kInvalid);     // no row 2
  EXPECT_EQ(code(StoreRuns(rows.view(), {{0, 0, {1}}}, pages.flatten())), kInvalid);
  EXPECT_EQ(code(LoadRuns(pages, {{0, 0, {-1}}}, rows.view())), kInvalid);
  Rows other = RandomRows(SmallLayout(), 2, 8);
  other.k.pop_back();  // one layer too few
  EXPECT_EQ(code(LoadRuns(pages, {{0, 0, {1}}}, other.view())), kInvalid);
  EXPECT_TRUE(torch::equal(pages, before));
}

TEST(PageLayoutTest, PoolPagesRoundTripThroughStagedRuns) {
  const PageLayout l = SmallLayout();
  torch::Tensor pool = RandomPages(l, 6);
  const torch::Tensor staged = RandomPages(l, 3);
  ASSERT_TRUE(WritePages(pool, {4, 1, 3}, staged).ok());
  auto read = ReadPages(pool, {4, 1, 3}, torch::kCPU);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_TRUE(torch::equal(*read, staged));
  EXPECT_EQ(WritePages(pool, {4, 4, 3}, staged).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(WritePages(pool, {4, 1}, staged).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ReadPages(pool, {6}, torch::kCPU).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(PageLayoutTest, WireBytesAreTheStagedRun) {
  const PageLayout l = SmallLayout();
  const Rows rows = RandomRows(l, 2, 16);
  // Row 1, positions 4..11: two pages, staged as they would be sent.
  auto staged = StageRowPages(rows.view(), l, 1, 4, 2, torch::kCPU);
  ASSERT_TRUE(staged.ok()) << staged.status();
  EXPECT_TRUE(RunsAgree(*staged, {{1, 4, {0, 1}}}, rows, l.page_size));
  const std::string bytes(static_cast<const char*>(staged->data_ptr()), staged->nbytes());
  auto received = PagesFromBytes(l, bytes);
  ASSERT_TRUE(received.ok());
  EXPECT_TRUE(torch::equal(*received, *staged));
  EXPECT_EQ(PagesFromBytes(l, bytes.substr(1)).status().code(), absl::StatusCode::kInvalidArgument);

  // A CPU pool streams the same bytes in place, in any chunking.
  torch::Tensor pool = RandomPages(l, 5);
  ASSERT_TRUE(WritePages(pool, {3, 0}, *staged).ok());
  std::string streamed(bytes.size(), '\0');
  const int64_t chunk = 100;  // not a divisor of the page size
  for (int64_t at = 0; at < static_cast<int64_t>(bytes.size()); at += chunk) {
    const int64_t n = std::min<int64_t>(chunk, bytes.size() - at);
    CopyPoolBytes(pool, l, {3, 0}, at, n, &streamed[at]);
  }
  EXPECT_EQ(streamed, bytes);
}

}  // namespace
}  // namespace nanoserve
