// Each fused CUDA kernel (engine/cuda/fused_ops.h) against the LibTorch
// expression it replaces, over random shapes, ragged lengths and lengths
// that cross the key-range (split) boundaries. Built only with CUDA; skipped
// without a GPU.
#include "engine/cuda/fused_ops.h"

#include <cmath>
#include <limits>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

namespace nanoserve::cuda {
namespace {

class CudaKernelsTest : public ::testing::TestWithParam<torch::Dtype> {
 protected:
  void SetUp() override {
    if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
    torch::manual_seed(7);
  }
  torch::TensorOptions Opts() const {
    return torch::TensorOptions().dtype(GetParam()).device(torch::kCUDA);
  }
  // fp32: accumulation order only; bf16/fp16: one rounding of the output.
  double Tol() const { return GetParam() == torch::kFloat ? 1e-4 : 3e-2; }
};

double MaxDiff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kFloat) - b.to(torch::kFloat)).abs().max().item<double>();
}

TEST_P(CudaKernelsTest, AddLayerNormMatchesLibTorch) {
  for (int64_t cols : {16, 64, 768, 1600, 4096}) {
    for (int64_t rows : {1, 3, 64}) {
      torch::Tensor x = torch::randn({rows, cols}, Opts());
      torch::Tensor delta = torch::randn({rows, cols}, Opts());
      torch::Tensor w = torch::randn({cols}, Opts()), b = torch::randn({cols}, Opts());
      torch::Tensor sum = x + delta;  // rounded to the dtype, as the residual stream is
      torch::Tensor expected = torch::layer_norm(sum, {cols}, w, b, 1e-5);
      torch::Tensor out = AddLayerNorm(x, delta, w, b, 1e-5);
      EXPECT_EQ(MaxDiff(x, sum), 0.0) << cols << "x" << rows;
      EXPECT_LT(MaxDiff(out, expected), Tol() * 10) << cols << "x" << rows;
      torch::Tensor plain = AddLayerNorm(x, torch::Tensor(), w, b, 1e-5);
      EXPECT_LT(MaxDiff(plain, torch::layer_norm(sum, {cols}, w, b, 1e-5)), Tol() * 10);
    }
  }
}

TEST_P(CudaKernelsTest, EmbedLayerNormMatchesLibTorch) {
  const int64_t vocab = 300, positions = 50, cols = 96;
  torch::Tensor wte = torch::randn({vocab, cols}, Opts()),
                wpe = torch::randn({positions, cols}, Opts());
  torch::Tensor w = torch::randn({cols}, Opts()), b = torch::randn({cols}, Opts());
  auto int_opts = torch::TensorOptions().dtype(torch::kInt).device(torch::kCUDA);
  torch::Tensor ids = torch::tensor({0, 299, 17, 5}, int_opts);
  torch::Tensor pos = torch::tensor({0, 49, 3, 3}, int_opts);
  torch::Tensor x = torch::empty({4, cols}, Opts());
  torch::Tensor out = EmbedLayerNorm(wte, wpe, ids, pos, w, b, 1e-5, x);
  torch::Tensor sum =
      wte.index_select(0, ids.to(torch::kLong)) + wpe.index_select(0, pos.to(torch::kLong));
  EXPECT_EQ(MaxDiff(x, sum), 0.0);
  EXPECT_LT(MaxDiff(out, torch::layer_norm(sum, {cols}, w, b, 1e-5)), Tol() * 10);
}

// Attention of one new token per row over keys 0..len (the cached ones plus
// its own), in LibTorch: the reference of DecodeAttention.
torch::Tensor ReferenceDecodeAttention(const torch::Tensor& qkv, const torch::Tensor& k_cache,
                                       const torch::Tensor& v_cache,
                                       const std::vector<int>& lengths) {
  const int64_t n = qkv.size(0), heads = k_cache.size(1), d = k_cache.size(3), c = heads * d;
  std::vector<torch::Tensor> rows;
  for (int64_t b = 0; b < n; ++b) {
    const int64_t len = lengths[b];
    torch::Tensor q = qkv[b].narrow(0, 0, c).view({heads, 1, d}).to(torch::kFloat);
    torch::Tensor k_new = qkv[b].narrow(0, c, c).view({heads, 1, d}).to(torch::kFloat);
    torch::Tensor v_new = qkv[b].narrow(0, 2 * c, c).view({heads, 1, d}).to(torch::kFloat);
    torch::Tensor k = torch::cat({k_cache[b].narrow(1, 0, len).to(torch::kFloat), k_new}, 1);
    torch::Tensor v = torch::cat({v_cache[b].narrow(1, 0, len).to(torch::kFloat), v_new}, 1);
    torch::Tensor att =
        torch::softmax(torch::matmul(q, k.transpose(1, 2)) / std::sqrt(double(d)), -1);
    rows.push_back(torch::matmul(att, v).view({c}));  // (H, 1, D) -> (C)
  }
  return torch::stack(rows);
}

TEST_P(CudaKernelsTest, DecodeAttentionMatchesLibTorch) {
  struct Case {
    int64_t heads, head_dim, capacity;
    std::vector<int> lengths;
    std::vector<int64_t> splits;
  };
  const std::vector<Case> cases = {
      // GPT-2's head size; ragged rows, an empty cache, a full-but-one row;
      // lengths on both sides of the split boundaries (chunk = ceil((len+1)/splits)).
      {12, 64, 1024, {0, 1, 127, 128, 129, 1023}, {1, 2, 7, 22}},
      {4, 16, 96, {0, 5, 47, 95}, {1, 3, 96}},  // the tests' tiny model
      {25, 64, 300, {299, 255, 256}, {1, 4}},   // gpt2-xl's heads
      {2, 96, 200, {10, 150}, {1, 5}},          // a head size that does not divide 128
      {1, 128, 64, {63, 31}, {1, 2}},
  };
  for (const Case& t : cases) {
    const int64_t n = static_cast<int64_t>(t.lengths.size()), c = t.heads * t.head_dim;
    for (int64_t splits : t.splits) {
      torch::Tensor qkv = torch::randn({n, 3 * c}, Opts());
      torch::Tensor k_cache = torch::randn({n + 1, t.heads, t.capacity, t.head_dim}, Opts());
      torch::Tensor v_cache = torch::randn({n + 1, t.heads, t.capacity, t.head_dim}, Opts());
      torch::Tensor k_before = k_cache.clone(), v_before = v_cache.clone();
      torch::Tensor lengths =
          torch::tensor(t.lengths, torch::TensorOptions().dtype(torch::kInt)).to(torch::kCUDA);
      torch::Tensor expected = ReferenceDecodeAttention(qkv, k_cache, v_cache, t.lengths);
      torch::Tensor out = DecodeAttention(qkv, k_cache, v_cache, lengths, splits);
      EXPECT_LT(MaxDiff(out, expected), Tol())
          << "heads " << t.heads << " head_dim " << t.head_dim << " splits " << splits;
      // The new K/V went to position len of each row, nothing else moved.
      for (int64_t b = 0; b < n; ++b) {
        const int64_t len = t.lengths[b];
        EXPECT_EQ(
            MaxDiff(k_cache[b].select(1, len), qkv[b].narrow(0, c, c).view({t.heads, t.head_dim})),
            0.0);
        EXPECT_EQ(MaxDiff(v_cache[b].select(1, len),
                          qkv[b].narrow(0, 2 * c, c).view({t.heads, t.head_dim})),
                  0.0);
        k_before[b].select(1, len).copy_(k_cache[b].select(1, len));
        v_before[b].select(1, len).copy_(v_cache[b].select(1, len));
      }
      EXPECT_TRUE(torch::equal(k_cache, k_before));
      EXPECT_TRUE(torch::equal(v_cache, v_before));
    }
  }
}

TEST(CudaArgmaxTest, MatchesLibTorchWithTiesToTheLowerIndex) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  torch::manual_seed(3);
  auto opts = torch::TensorOptions().dtype(torch::kFloat).device(torch::kCUDA);
  for (int64_t cols : {1, 31, 1024, 1025, 50257}) {
    torch::Tensor x = torch::randn({5, cols}, opts);
    EXPECT_TRUE(torch::equal(ArgmaxRows(x), x.argmax(-1))) << cols;
  }
  torch::Tensor ties = torch::zeros({2, 3000}, opts);
  ties[0][2999] = 1;
  ties[0][17] = 1;                                       // equal maxima: the first wins
  ties[1][5] = std::numeric_limits<float>::quiet_NaN();  // NaN counts as largest
  torch::Tensor got = ArgmaxRows(ties).cpu();
  EXPECT_EQ(got[0].item<int64_t>(), 17);
  EXPECT_EQ(got[1].item<int64_t>(), 5);
}

TEST_P(CudaKernelsTest, RejectsMisshapenInputs) {
  torch::Tensor qkv = torch::randn({2, 3 * 64}, Opts());
  torch::Tensor k = torch::randn({2, 4, 8, 16}, Opts()), v = torch::randn({2, 4, 8, 16}, Opts());
  torch::Tensor lengths =
      torch::zeros({2}, torch::TensorOptions().dtype(torch::kInt).device(torch::kCUDA));
  EXPECT_THROW(DecodeAttention(qkv, k, v, lengths.to(torch::kLong), 1), c10::Error);
  EXPECT_THROW(DecodeAttention(qkv.narrow(1, 0, 64), k, v, lengths, 1), c10::Error);
  EXPECT_THROW(DecodeAttention(qkv, k, v, lengths, 0), c10::Error);
  torch::Tensor x = torch::randn({2, 64}, Opts());
  EXPECT_THROW(AddLayerNorm(x, torch::randn({2, 32}, Opts()), torch::ones({64}, Opts()),
                            torch::zeros({64}, Opts()), 1e-5),
               c10::Error);
}

INSTANTIATE_TEST_SUITE_P(Dtypes, CudaKernelsTest,
                         ::testing::Values(torch::kFloat, torch::kBFloat16, torch::kHalf),
                         [](const auto& info) {
                           return std::string(info.param == torch::kFloat      ? "fp32"
                                              : info.param == torch::kBFloat16 ? "bf16"
                                                                               : "fp16");
                         });

}  // namespace
}  // namespace nanoserve::cuda
