#include "kv_store/page_copy.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

namespace nanoserve {
namespace {

using torch::indexing::Slice;

// (pages, n_layer, 2, n_head, page_size, head_dim)
torch::Tensor MakeStorage() {
  torch::manual_seed(0);
  return torch::randn({6, 2, 2, 3, 4, 5});
}

TEST(PageCopyTest, ScatterThenGatherRoundTrips) {
  torch::Tensor storage = MakeStorage();
  const torch::Tensor before = storage.clone();
  const std::vector<int32_t> pages = {4, 1, 3};
  // (n_layer, 2, n_head, 3 pages * 4, head_dim), double: converted on write.
  torch::Tensor kv = torch::randn({2, 2, 3, 12, 5}, torch::kDouble);
  ASSERT_TRUE(ScatterPages(storage, pages, kv).ok());

  auto gathered = GatherPages(storage, pages);
  ASSERT_TRUE(gathered.ok()) << gathered.status();
  EXPECT_EQ(gathered->sizes(), torch::IntArrayRef({2, 2, 3, 12, 5}));
  EXPECT_TRUE(torch::allclose(*gathered, kv.to(torch::kFloat)));

  // Reference, page by page: position j lies in pages[j / 4] at j % 4.
  for (int64_t i = 0; i < static_cast<int64_t>(pages.size()); ++i) {
    torch::Tensor expected =
        kv.index({Slice(), Slice(), Slice(), Slice(4 * i, 4 * i + 4), Slice()});
    EXPECT_TRUE(torch::allclose(storage[pages[i]], expected.to(torch::kFloat)))
        << "page " << pages[i];
  }
  // Pages not written are untouched.
  for (int page : {0, 2, 5}) {
    EXPECT_TRUE(torch::equal(storage[page], before[page])) << "page " << page;
  }
}

TEST(PageCopyTest, RoundTripsOnCudaStorage) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  torch::Tensor storage = torch::zeros(
      {6, 2, 2, 3, 4, 5},
      torch::TensorOptions().dtype(torch::kBFloat16).device(torch::kCUDA));
  const std::vector<int32_t> pages = {5, 0};
  torch::Tensor kv = torch::randn({2, 2, 3, 8, 5});  // CPU float
  ASSERT_TRUE(ScatterPages(storage, pages, kv).ok());
  auto gathered = GatherPages(storage, pages);
  ASSERT_TRUE(gathered.ok()) << gathered.status();
  EXPECT_TRUE(gathered->is_cuda());
  EXPECT_TRUE(torch::allclose(gathered->cpu().to(torch::kFloat),
                              kv.to(torch::kBFloat16).to(torch::kFloat)));
  EXPECT_EQ(storage[1].abs().sum().item<float>(), 0.0f);
}

TEST(PageCopyTest, GatherOfNoPagesIsEmpty) {
  auto gathered = GatherPages(MakeStorage(), {});
  ASSERT_TRUE(gathered.ok());
  EXPECT_EQ(gathered->sizes(), torch::IntArrayRef({2, 2, 3, 0, 5}));
}

TEST(PageCopyTest, BadArgumentsChangeNothing) {
  torch::Tensor storage = MakeStorage();
  const torch::Tensor before = storage.clone();
  torch::Tensor kv = torch::ones({2, 2, 3, 8, 5});
  EXPECT_EQ(ScatterPages(storage, {1}, kv).code(),  // 8 positions, 1 page
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ScatterPages(storage, {1, 6}, kv).code(),  // out of range
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ScatterPages(storage, {2, 2}, kv).code(),  // twice
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ScatterPages(storage.flatten(), {0, 1}, kv).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(torch::equal(storage, before));
  EXPECT_EQ(GatherPages(storage, {-1}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace nanoserve
