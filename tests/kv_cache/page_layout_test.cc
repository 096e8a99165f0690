// The page layout module: sizes, pool <-> staged runs, and the wire's bytes.
#include "kv_cache/page_layout.h"

#include <gtest/gtest.h>
#include <torch/cuda.h>

#include <algorithm>
#include <cstring>
#include <numeric>
#include <string>
#include <tuple>
#include <vector>

namespace nanoserve {
namespace page_layout_test {

PageLayout SmallLayout() {
  PageLayout layout;
  layout.n_layer = 2;
  layout.n_head = 3;
  layout.head_dim = 5;
  layout.page_size = 4;
  return layout;
}

torch::Tensor RandomPages(const PageLayout& l, int64_t n) { return torch::randn(l.shape(n)); }

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

TEST(PageLayoutTest, PagesAndPositionsConvertBothWays) {
  const PageLayout l = SmallLayout();  // pages of 4
  const torch::Tensor pages = RandomPages(l, 3);
  const torch::Tensor kv = PagesAsTokens(pages);  // (L, 2, H, 12, D)
  ASSERT_EQ(kv.sizes(), (std::vector<int64_t>{2, 2, 3, 12, 5}));
  // Position 6 is page 1's third slot, in every layer, K and V, head.
  EXPECT_TRUE(torch::equal(kv.select(3, 6), pages[1].select(3, 2)));
  EXPECT_TRUE(torch::equal(TokensAsPages(kv, 4), pages));
  // Another page size regroups the same positions.
  const torch::Tensor by_six = TokensAsPages(kv, 6);
  ASSERT_EQ(by_six.size(0), 2);
  EXPECT_TRUE(torch::equal(PagesAsTokens(by_six), kv));
  EXPECT_THROW(TokensAsPages(kv, 5), c10::Error);
  EXPECT_THROW(PagesAsTokens(kv), c10::Error);
}

TEST(PageRunTest, CountsAndChecksPositions) {
  const PageLayout l = SmallLayout();  // pages of 4
  EXPECT_EQ(PageRun::PagesFor(0, 4), 0);
  EXPECT_EQ(PageRun::PagesFor(8, 4), 2);
  EXPECT_EQ(PageRun::PagesFor(9, 4), 3);
  const torch::Tensor staged = RandomPages(l, 3);
  EXPECT_EQ(PageRun::StagedTokens(staged), 12);
  EXPECT_TRUE(PageRun::CheckStaged(staged, l, 12).ok());
  EXPECT_EQ(PageRun::CheckStaged(staged, l, 11).code(), absl::StatusCode::kInvalidArgument);
  PageLayout other = l;
  other.n_head = 4;
  EXPECT_EQ(PageRun::CheckStaged(staged, other, 12).code(), absl::StatusCode::kInvalidArgument);
  other = l;
  other.page_size = 6;  // any page size
  EXPECT_TRUE(PageRun::CheckStaged(staged, other, 12).ok());
  EXPECT_TRUE(PageRun::CheckTokens(PagesAsTokens(staged), l).ok());
  EXPECT_EQ(PageRun::CheckTokens(staged, l).code(), absl::StatusCode::kInvalidArgument);

  const std::vector<int32_t> pages{5, 2, 7};
  const PageRun run(pages, 4, 10);
  EXPECT_EQ(run.room(), 12);
  EXPECT_TRUE(run.Fits(3, 12));
  EXPECT_FALSE(run.Fits(3, 13));
  std::vector<int64_t> at, offsets, table;
  run.AppendPositions(3, 6, at, offsets);
  EXPECT_EQ(at, (std::vector<int64_t>{5, 2, 2}));
  EXPECT_EQ(offsets, (std::vector<int64_t>{3, 0, 1}));
  run.AppendPages(4, 9, table);
  EXPECT_EQ(table, (std::vector<int64_t>{5, 2, 7, 9}));
}

TEST(PageRunTest, ScatterAndGatherByPosition) {
  const PageLayout l = SmallLayout();  // pages of 4
  torch::Tensor pool = torch::zeros(l.shape(8));
  const std::vector<int32_t> pages{6, 1, 3};
  const PageRun run(pages, 4, 11);
  const torch::Tensor kv = torch::randn({2, 2, 3, 9, 5});  // positions 2..10
  ASSERT_TRUE(run.Write(pool, 2, kv).ok());
  // Position 5 is page 1's second slot.
  EXPECT_TRUE(torch::equal(pool[1].select(3, 1), kv.select(3, 3)));
  absl::StatusOr<torch::Tensor> back = run.Read(pool, 2, 11);
  ASSERT_TRUE(back.ok());
  EXPECT_TRUE(torch::equal(*back, kv));
  // The gather of a staged run's own pages is its positions.
  const torch::Tensor staged = ReadPages(pool, pages, torch::kCPU).value();
  EXPECT_TRUE(torch::equal(
      GatherPositions(pool, torch::tensor({6, 1, 3}, torch::kLong).view({1, 3}), 11).select(0, 0),
      PagesAsTokens(staged).narrow(3, 0, 11)));
  EXPECT_EQ(run.Write(pool, 4, kv).code(), absl::StatusCode::kInvalidArgument);  // 4 + 9 > 12
  EXPECT_EQ(run.Read(pool, 0, 12).status().code(), absl::StatusCode::kInvalidArgument);
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

TEST(PageLayoutTest, CopyPagesIsAGatherThenAScatter) {
  const PageLayout l = SmallLayout();
  const torch::Tensor from = RandomPages(l, 5);
  torch::Tensor to = RandomPages(l, 6);
  const torch::Tensor untouched = to.clone();
  ASSERT_TRUE(CopyPages(from, {3, 0, 3}, to, {5, 1, 2}).ok());
  EXPECT_TRUE(torch::equal(ReadPages(to, {5, 1, 2}, torch::kCPU).value(),
                           ReadPages(from, {3, 0, 3}, torch::kCPU).value()));
  EXPECT_TRUE(torch::equal(ReadPages(to, {0, 3, 4}, torch::kCPU).value(),
                           ReadPages(untouched, {0, 3, 4}, torch::kCPU).value()));
  // Into a pool of another dtype: converted.
  torch::Tensor half = torch::zeros(l.shape(4), torch::kBFloat16);
  ASSERT_TRUE(CopyPages(from, {1, 2}, half, {3, 0}).ok());
  EXPECT_TRUE(torch::equal(half[3].cpu(), from[1].to(torch::kBFloat16)));
  EXPECT_TRUE(torch::equal(half[0].cpu(), from[2].to(torch::kBFloat16)));
  // Nothing is written for a bad list.
  const torch::Tensor before = to.clone();
  EXPECT_EQ(CopyPages(from, {0, 1}, to, {2, 2}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CopyPages(from, {5}, to, {0}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CopyPages(from, {0}, to, {6}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CopyPages(from, {0, 1}, to, {0}).code(), absl::StatusCode::kInvalidArgument);
  PageLayout other = l;
  other.page_size += 1;
  EXPECT_EQ(CopyPages(RandomPages(other, 2), {0}, to, {0}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(torch::equal(to, before));
}

// On a GPU, CopyPages and ReadPages run one kernel (page_copy_cuda.h) where
// both pools are on the device in one dtype, in as many launches as the
// pages need: the result is the CPU's copy, bit for bit, for pages of
// several 64 KiB chunks, for more pages than one launch carries, and for
// pages whose size is no multiple of 16 bytes (the gather instead).
TEST(PageLayoutTest, CopyPagesOnAGpuIsTheCpusCopy) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  const torch::Device gpu(torch::kCUDA, 0);
  PageLayout big;
  big.n_layer = 4;
  big.n_head = 4;
  big.head_dim = 64;
  big.page_size = 16;  // 128 KiB pages in fp32
  PageLayout odd = SmallLayout();
  odd.page_size = 3;  // 180-byte pages in bf16
  for (const auto& [layout, dtype, n] : {std::tuple{big, torch::kFloat, int64_t{40}},
                                         std::tuple{SmallLayout(), torch::kBFloat16, int64_t{1000}},
                                         std::tuple{odd, torch::kBFloat16, int64_t{50}}}) {
    const torch::Tensor from = RandomPages(layout, n).to(dtype);
    torch::Tensor to = RandomPages(layout, n + 7).to(dtype);
    std::vector<int32_t> from_pages, to_pages(n);
    for (int64_t i = 0; i < n; ++i) {
      from_pages.push_back(static_cast<int32_t>((i * 7 + 3) % (n / 2 + 1)));  // with repeats
    }
    std::iota(to_pages.rbegin(), to_pages.rend(), 7);  // each once, backwards
    torch::Tensor expected = to.clone();
    ASSERT_TRUE(CopyPages(from, from_pages, expected, to_pages).ok());
    torch::Tensor on_gpu = to.to(gpu);
    ASSERT_TRUE(CopyPages(from.to(gpu), from_pages, on_gpu, to_pages).ok());
    EXPECT_TRUE(torch::equal(on_gpu.cpu(), expected)) << n << " pages";
    auto read = ReadPages(from.to(gpu), from_pages, gpu);
    ASSERT_TRUE(read.ok()) << read.status();
    EXPECT_TRUE(torch::equal(read->cpu(), ReadPages(from, from_pages, torch::kCPU).value()));
  }
}

TEST(PageLayoutTest, WireBytesAreTheStagedRun) {
  const PageLayout l = SmallLayout();
  // Two pages, staged as they would be sent.
  auto staged = ReadPages(RandomPages(l, 4), {2, 1}, torch::kCPU);
  ASSERT_TRUE(staged.ok()) << staged.status();
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

}  // namespace page_layout_test
}  // namespace nanoserve
