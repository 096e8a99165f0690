#include "engine/attention.h"

#include <gtest/gtest.h>

#include <torch/utils.h>
#include <torch/version.h>

namespace nanoserve {
namespace attention_test {

TEST(CausalMaskTest, SquareWithoutCacheIsLowerTriangular) {
  auto mask = CausalMask(0, 4, 4);
  ASSERT_EQ(mask.sizes(), (std::vector<int64_t>{4, 4}));
  EXPECT_TRUE(torch::equal(mask, torch::ones({4, 4}, torch::kBool).tril()));
}

TEST(CausalMaskTest, ChunkOverCachedKeysIsRectangular) {
  // 3 new queries at positions 5, 6, 7 over 8 keys.
  auto mask = CausalMask(5, 3, 8);
  ASSERT_EQ(mask.sizes(), (std::vector<int64_t>{3, 8}));
  for (int64_t i = 0; i < 3; ++i) {
    for (int64_t j = 0; j < 8; ++j) {
      EXPECT_EQ(mask[i][j].item<bool>(), j <= 5 + i) << i << "," << j;
    }
  }
}

TEST(CausalMaskTest, SingleNewRowSeesEveryKey) {
  auto mask = CausalMask(9, 1, 10);
  ASSERT_EQ(mask.sizes(), (std::vector<int64_t>{1, 10}));
  EXPECT_TRUE(mask.all().item<bool>());
}

TEST(AttentionTest, NaiveMatchesDirectFormula) {
  torch::manual_seed(0);
  auto q = torch::randn({2, 3, 4, 8}), k = torch::randn({2, 3, 6, 8}),
       v = torch::randn({2, 3, 6, 8});
  auto mask = CausalMask(2, 4, 6);
  auto out = Attention(AttentionKind::kNaive, q, k, v, mask);
  // Row by row: query i sees keys 0..2+i.
  for (int64_t i = 0; i < 4; ++i) {
    auto keys = k.narrow(2, 0, 3 + i), values = v.narrow(2, 0, 3 + i);
    auto w = torch::softmax(
        torch::matmul(q.narrow(2, i, 1), keys.transpose(-2, -1)) / std::sqrt(8.0), -1);
    EXPECT_TRUE(torch::allclose(out.narrow(2, i, 1), torch::matmul(w, values), 1e-5, 1e-6)) << i;
  }
}

TEST(AttentionTest, FusedMatchesNaiveWhereAvailable) {
  if (!FusedAttentionAvailable()) {
    EXPECT_FALSE(ParseAttentionKind("fused").ok());
    GTEST_SKIP() << "LibTorch " << TORCH_VERSION << " has no scaled_dot_product_attention";
  }
  torch::manual_seed(1);
  auto q = torch::randn({1, 2, 5, 16}), k = torch::randn({1, 2, 9, 16}),
       v = torch::randn({1, 2, 9, 16});
  for (auto mask : {CausalMask(4, 5, 9), torch::Tensor()}) {
    auto a = Attention(AttentionKind::kNaive, q, k, v, mask);
    auto b = Attention(AttentionKind::kFused, q, k, v, mask);
    EXPECT_TRUE(torch::allclose(a, b, 1e-4, 1e-5));
  }
}

TEST(AttentionTest, CausalAttentionIsTheSquareCausalMask) {
  torch::manual_seed(2);
  auto q = torch::randn({2, 3, 7, 16}), k = torch::randn({2, 3, 7, 16}),
       v = torch::randn({2, 3, 7, 16});
  auto masked = Attention(AttentionKind::kNaive, q, k, v, CausalMask(0, 7, 7));
  EXPECT_TRUE(torch::allclose(CausalAttention(AttentionKind::kNaive, q, k, v), masked, 1e-5, 1e-6));
  if (FusedAttentionAvailable()) {
    EXPECT_TRUE(
        torch::allclose(CausalAttention(AttentionKind::kFused, q, k, v), masked, 1e-4, 1e-5));
  }
  EXPECT_THROW(CausalAttention(AttentionKind::kNaive, q, k.narrow(2, 0, 5), v.narrow(2, 0, 5)),
               c10::Error);
}

TEST(AttentionTest, ParsesNames) {
  EXPECT_EQ(ParseAttentionKind("naive").value(), AttentionKind::kNaive);
  EXPECT_FALSE(ParseAttentionKind("flash").ok());
}

}  // namespace attention_test
}  // namespace nanoserve
