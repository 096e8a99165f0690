// Each fused CUDA kernel (engine/cuda/fused_ops.h) against the LibTorch
// expression it replaces, over random shapes, ragged lengths and lengths
// that cross the key-range (split) boundaries. Built only with CUDA; skipped
// without a GPU.
#include "engine/cuda/fused_ops.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>
#include <vector>

#include <gtest/gtest.h>
#include <torch/cuda.h>
#include <torch/types.h>
#include <torch/utils.h>

#include "engine/cuda/kernels.h"

namespace nanoserve::cuda {
namespace cuda_kernels_test {

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

// Row b's keys (or values) of one layer, gathered through its block table
// into a contiguous (H, max_pages * page_size, D).
torch::Tensor GatherRow(const torch::Tensor& pages, const torch::Tensor& table, int64_t b) {
  torch::Tensor run = pages.index_select(0, table[b].to(torch::kLong));  // (n, H, P, D)
  return run.permute({1, 0, 2, 3}).reshape({pages.size(1), -1, pages.size(3)});
}

// Rows 0..n-1 of GatherRow, stacked: (n, H, max_pages * page_size, D).
torch::Tensor GatherRows(const torch::Tensor& pages, const torch::Tensor& table, int64_t n) {
  std::vector<torch::Tensor> rows;
  for (int64_t b = 0; b < n; ++b) rows.push_back(GatherRow(pages, table, b));
  return torch::stack(rows);
}

TEST_P(CudaKernelsTest, DecodeAttentionMatchesLibTorch) {
  struct Case {
    int64_t heads, head_dim, page_size, max_pages;
    std::vector<int> lengths;
    std::vector<int64_t> splits;
  };
  const std::vector<Case> cases = {
      // GPT-2's head size; ragged rows, an empty cache, a full-but-one row;
      // lengths on both sides of the split boundaries (chunk = ceil((len+1)/splits))
      // and of pages.
      {12, 64, 16, 64, {0, 1, 127, 128, 129, 1023}, {1, 2, 7, 22}},
      {4, 16, 1, 96, {0, 5, 47, 95}, {1, 3, 96}},  // the tests' tiny model, pages of one
      {25, 64, 16, 19, {299, 255, 256}, {1, 4}},   // gpt2-xl's heads
      {2, 96, 7, 29, {10, 150}, {1, 5}},           // a head size that does not divide 128
      {1, 128, 16, 4, {63, 31}, {1, 2}},
  };
  for (const Case& t : cases) {
    const int64_t n = static_cast<int64_t>(t.lengths.size()), c = t.heads * t.head_dim;
    for (int64_t splits : t.splits) {
      // A pool of two layers (layer 1 is read), its pages dealt to the rows
      // in shuffled order; a few pages belong to no row.
      const int64_t num_pages = n * t.max_pages + 3;
      torch::Tensor pool =
          torch::randn({num_pages, 2, 2, t.heads, t.page_size, t.head_dim}, Opts());
      torch::Tensor k_pages = pool.select(1, 1).select(1, 0);
      torch::Tensor v_pages = pool.select(1, 1).select(1, 1);
      torch::Tensor table = torch::randperm(num_pages, torch::TensorOptions().dtype(torch::kLong))
                                .narrow(0, 0, n * t.max_pages)
                                .view({n, t.max_pages})
                                .to(torch::kInt)
                                .to(torch::kCUDA);
      torch::Tensor k_cache = GatherRows(k_pages, table, n);
      torch::Tensor v_cache = GatherRows(v_pages, table, n);
      torch::Tensor qkv = torch::randn({n, 3 * c}, Opts());
      torch::Tensor before = pool.clone();
      torch::Tensor lengths =
          torch::tensor(t.lengths, torch::TensorOptions().dtype(torch::kInt)).to(torch::kCUDA);
      torch::Tensor expected = ReferenceDecodeAttention(qkv, k_cache, v_cache, t.lengths);
      torch::Tensor out = DecodeAttention(qkv, k_pages, v_pages, table, lengths, splits);
      EXPECT_LT(MaxDiff(out, expected), Tol()) << "heads " << t.heads << " head_dim " << t.head_dim
                                               << " page " << t.page_size << " splits " << splits;
      // Both value loads give the same result: 16-byte ones (the default)
      // and one element a thread (the profile's comparison).
      torch::Tensor wide = DecodeAttention(qkv, k_pages, v_pages, table, lengths, splits,
                                           /*vector_values=*/true);
      EXPECT_LT(MaxDiff(wide, expected), Tol())
          << "16-byte value loads, heads " << t.heads << " head_dim " << t.head_dim;
      torch::Tensor narrow = DecodeAttention(qkv, k_pages, v_pages, table, lengths, splits,
                                             /*vector_values=*/false);
      EXPECT_LT(MaxDiff(narrow, expected), Tol())
          << "one value element a thread, heads " << t.heads << " head_dim " << t.head_dim;
      // Any shortest key range: every split busy (1), and ranges longer
      // than the even share, so that the later splits are empty.
      for (int64_t min_chunk : {1, 5, 128}) {
        torch::Tensor ranged = DecodeAttention(qkv, k_pages, v_pages, table, lengths, splits,
                                               /*vector_values=*/true, min_chunk);
        EXPECT_LT(MaxDiff(ranged, expected), Tol())
            << "min_chunk " << min_chunk << ", heads " << t.heads << " splits " << splits;
      }
      // The new K/V went to position len of each row's pages, nothing else
      // of the pool moved.
      torch::Tensor table_cpu = table.cpu();
      for (int64_t b = 0; b < n; ++b) {
        const int64_t len = t.lengths[b];
        const int64_t page = table_cpu[b][len / t.page_size].item<int>();
        const int64_t at = len % t.page_size;
        EXPECT_EQ(MaxDiff(k_pages[page].select(1, at),
                          qkv[b].narrow(0, c, c).view({t.heads, t.head_dim})),
                  0.0);
        EXPECT_EQ(MaxDiff(v_pages[page].select(1, at),
                          qkv[b].narrow(0, 2 * c, c).view({t.heads, t.head_dim})),
                  0.0);
        before[page][1].select(2, at).copy_(pool[page][1].select(2, at));
      }
      EXPECT_TRUE(torch::equal(pool, before));
    }
  }
}

// Shared-prefix (cascade) attention: rows whose block tables begin with the
// same pages attend those keys as a group (LaunchSharedPrefixAttention) and
// their own after them; the output equals LibTorch's over each row's whole
// keys, and the new K/V are written as without. Two groups (64 shared keys
// over rows 0-2, one row's new token right after them; 80 over rows 3-4,
// two key ranges of 64), a row in none; the shared keys split into 1 range
// and 3 (some empty). bf16 and fp16 at head size 64 only.
TEST_P(CudaKernelsTest, SharedPrefixDecodeAttentionMatchesLibTorch) {
  if (!SharedPrefixAttentionTakes(GetParam(), 64)) {
    GTEST_SKIP() << "shared-prefix attention takes bf16 and fp16 at head size 64";
  }
  const int64_t heads = 4, head_dim = 64, page_size = 16, max_pages = 8, c = heads * head_dim;
  const std::vector<int> lengths = {70, 100, 64, 90, 81, 40};
  const int64_t n = static_cast<int64_t>(lengths.size());
  const int64_t num_pages = n * max_pages + 3;
  torch::Tensor pool = torch::randn({num_pages, 2, 2, heads, page_size, head_dim}, Opts());
  torch::Tensor k_pages = pool.select(1, 1).select(1, 0);
  torch::Tensor v_pages = pool.select(1, 1).select(1, 1);
  torch::Tensor table_cpu = torch::randperm(num_pages, torch::TensorOptions().dtype(torch::kLong))
                                .narrow(0, 0, n * max_pages)
                                .view({n, max_pages})
                                .to(torch::kInt);
  // Rows 1 and 2 hold row 0's first 4 pages, row 4 row 3's first 5.
  for (int64_t b : {1, 2}) table_cpu[b].narrow(0, 0, 4).copy_(table_cpu[0].narrow(0, 0, 4));
  table_cpu[4].narrow(0, 0, 5).copy_(table_cpu[3].narrow(0, 0, 5));
  torch::Tensor table = table_cpu.to(torch::kCUDA);
  auto ints = [](const std::vector<int>& v) {
    return torch::tensor(v, torch::TensorOptions().dtype(torch::kInt)).to(torch::kCUDA);
  };
  std::vector<int> groups(2 * kSharedPrefixGroupInts, 0);
  const std::vector<std::vector<int>> members = {{64, 3, 0, 1, 2}, {80, 2, 3, 4}};
  for (size_t g = 0; g < members.size(); ++g) {
    std::copy(members[g].begin(), members[g].end(), groups.begin() + g * kSharedPrefixGroupInts);
  }
  SharedPrefix shared;
  shared.groups = ints(groups).view({2, kSharedPrefixGroupInts});
  shared.key_begin = ints({64, 64, 64, 80, 80, 0});
  torch::Tensor qkv = torch::randn({n, 3 * c}, Opts());
  torch::Tensor lengths_d = ints(lengths);
  for (int64_t shared_splits : {1, 3}) {
    for (int64_t splits : {1, 4}) {
      SCOPED_TRACE(::testing::Message() << shared_splits << " shared ranges, " << splits
                                        << " ranges of the rows' own keys");
      torch::Tensor k_cache = GatherRows(k_pages, table, n);
      torch::Tensor v_cache = GatherRows(v_pages, table, n);
      torch::Tensor expected = ReferenceDecodeAttention(qkv, k_cache, v_cache, lengths);
      torch::Tensor before = pool.clone();
      torch::Tensor plain = DecodeAttention(qkv, k_pages, v_pages, table, lengths_d, splits);
      torch::Tensor after_plain = pool.clone();
      pool.copy_(before);
      shared.splits = shared_splits;
      torch::Tensor cascade = DecodeAttention(qkv, k_pages, v_pages, table, lengths_d, splits,
                                              /*vector_values=*/true, kAutoMinChunk, shared);
      EXPECT_LT(MaxDiff(plain, expected), Tol());
      EXPECT_LT(MaxDiff(cascade, expected), Tol());
      EXPECT_TRUE(torch::equal(pool, after_plain)) << "the same new K/V written";
    }
  }
}

// Many queries per row over keys already in the pages (a suffix after a
// cached prefix): each query sees its row's keys up to its own position;
// nothing is written.
TEST_P(CudaKernelsTest, PagedAttentionOfManyQueriesMatchesLibTorch) {
  const int64_t heads = 4, head_dim = 64, page_size = 16, max_pages = 8, c = heads * head_dim;
  const std::vector<int> cached = {0, 17, 40};
  const int64_t rows = static_cast<int64_t>(cached.size()), per_row = 5;
  const int64_t num_pages = rows * max_pages + 2;
  torch::Tensor pool = torch::randn({num_pages, 1, 2, heads, page_size, head_dim}, Opts());
  torch::Tensor k_pages = pool.select(1, 0).select(1, 0);
  torch::Tensor v_pages = pool.select(1, 0).select(1, 1);
  torch::Tensor table = torch::randperm(num_pages, torch::TensorOptions().dtype(torch::kLong))
                            .narrow(0, 0, rows * max_pages)
                            .view({rows, max_pages})
                            .to(torch::kInt)
                            .to(torch::kCUDA);
  torch::Tensor qkv = torch::randn({rows * per_row, 3 * c}, Opts());
  // The reference: query i as a decode query whose own key and value are
  // the row's at its position.
  std::vector<int> table_rows, positions;
  std::vector<torch::Tensor> ref_qkv, k_rows, v_rows;
  for (int64_t b = 0; b < rows; ++b) {
    const torch::Tensor k_row = GatherRow(k_pages, table, b), v_row = GatherRow(v_pages, table, b);
    for (int64_t t = 0; t < per_row; ++t) {
      const int64_t i = b * per_row + t, pos = cached[b] + t;
      table_rows.push_back(static_cast<int>(b));
      positions.push_back(static_cast<int>(pos));
      ref_qkv.push_back(torch::cat({qkv[i].narrow(0, 0, c), k_row.select(1, pos).flatten(),
                                    v_row.select(1, pos).flatten()}));
      k_rows.push_back(k_row);
      v_rows.push_back(v_row);
    }
  }
  torch::Tensor expected = ReferenceDecodeAttention(torch::stack(ref_qkv), torch::stack(k_rows),
                                                    torch::stack(v_rows), positions);
  auto ints = [](const std::vector<int>& v) {
    return torch::tensor(v, torch::TensorOptions().dtype(torch::kInt)).to(torch::kCUDA);
  };
  const torch::Tensor before = pool.clone();
  for (int64_t splits : {1, 3}) {
    torch::Tensor out =
        PagedAttention(qkv, k_pages, v_pages, table, ints(table_rows), ints(positions), splits);
    EXPECT_LT(MaxDiff(out, expected), Tol()) << "splits " << splits;
  }
  EXPECT_TRUE(torch::equal(pool, before));
}

// A prefill pass's keys and values into their rows' pages: token i's k and
// v parts of qkv land at its position in its row's page, bit for bit;
// tokens of the scratch row (padding) write only the scratch page; nothing
// else changes.
// The tiled prefill kernel against the reference, per query as a decode
// query whose own key and value are the row's at its position: rows with
// cached prefixes of 0, 17 and 40 (or 300) tokens and 45, 3 and 70 queries
// (several query tiles, a partial one, a tile of fewer than 16, 2 and 6 key
// tiles of 64: the register kernel's stages refilled), pages of 16 and 1, the
// head sizes it takes, the keys whole and split; queries in no tile are not
// written.
TEST_P(CudaKernelsTest, PrefillAttentionMatchesLibTorch) {
  struct Case {
    int64_t heads, head_dim, page_size, max_pages;
    int last_cached;  // row 2's cached prefix
  };
  for (const Case& t : std::vector<Case>{{4, 64, 16, 8, 40},
                                         {4, 64, 16, 24, 300},
                                         {3, 16, 1, 120, 40},
                                         {2, 128, 16, 8, 40},
                                         {2, 32, 16, 8, 40}}) {
    SCOPED_TRACE(::testing::Message() << "head size " << t.head_dim << ", pages of " << t.page_size
                                      << ", row 2 after " << t.last_cached);
    const int64_t c = t.heads * t.head_dim;
    const std::vector<int> cached = {0, 17, t.last_cached}, queries = {45, 3, 70};
    const int64_t rows = static_cast<int64_t>(cached.size());
    const int64_t num_pages = rows * t.max_pages + 2;
    torch::Tensor pool = torch::randn({num_pages, 1, 2, t.heads, t.page_size, t.head_dim}, Opts());
    torch::Tensor k_pages = pool.select(1, 0).select(1, 0);
    torch::Tensor v_pages = pool.select(1, 0).select(1, 1);
    torch::Tensor table = torch::randperm(num_pages, torch::TensorOptions().dtype(torch::kLong))
                              .narrow(0, 0, rows * t.max_pages)
                              .view({rows, t.max_pages})
                              .to(torch::kInt)
                              .to(torch::kCUDA);
    std::vector<int> table_rows, positions, tiles;
    std::vector<torch::Tensor> ref_qkv, k_rows, v_rows;
    int64_t total = 0;
    for (int64_t b = 0; b < rows; ++b) total += queries[b];
    torch::Tensor qkv = torch::randn({total + 1, 3 * c}, Opts());  // the last in no tile
    int64_t i = 0;
    for (int64_t b = 0; b < rows; ++b) {
      const torch::Tensor k_row = GatherRow(k_pages, table, b),
                          v_row = GatherRow(v_pages, table, b);
      for (int64_t q = 0; q < queries[b]; ++q, ++i) {
        if (q % kPrefillQueryTile == 0) {
          tiles.push_back(static_cast<int>(i));
          tiles.push_back(static_cast<int>(std::min<int64_t>(kPrefillQueryTile, queries[b] - q)));
        }
        const int64_t pos = cached[b] + q;
        table_rows.push_back(static_cast<int>(b));
        positions.push_back(static_cast<int>(pos));
        ref_qkv.push_back(torch::cat({qkv[i].narrow(0, 0, c), k_row.select(1, pos).flatten(),
                                      v_row.select(1, pos).flatten()}));
        k_rows.push_back(k_row);
        v_rows.push_back(v_row);
      }
    }
    table_rows.push_back(0);  // the query in no tile
    positions.push_back(0);
    tiles.insert(tiles.end(), {0, 0, 0, 0});  // and two empty tiles
    torch::Tensor expected =
        ReferenceDecodeAttention(torch::stack(ref_qkv), torch::stack(k_rows), torch::stack(v_rows),
                                 std::vector<int>(positions.begin(), positions.end() - 1));
    auto ints = [](const std::vector<int>& v) {
      return torch::tensor(v, torch::TensorOptions().dtype(torch::kInt)).to(torch::kCUDA);
    };
    const torch::Tensor before = pool.clone();
    // Each version (the tensor cores' kernels where they take the shape,
    // bf16 and fp16 at head size 64, else fp32 FMA; and FMA everywhere)
    // against LibTorch, with the keys whole (1 split) and split into
    // ranges of 64 keys: 2 (row 2's first queries see none of the second
    // range's), 5 (some ranges past every key).
    for (const auto& [version, name] : std::vector<std::pair<PrefillAttentionVersion, const char*>>{
             {PrefillAttentionVersion::kWmma, "wmma"},
             {PrefillAttentionVersion::kRegisters, "registers"},
             {PrefillAttentionVersion::kFma, "fp32 FMA"}}) {
      for (int splits : {1, 2, 5}) {
        SCOPED_TRACE(::testing::Message() << name << ", " << splits << " key splits");
        torch::Tensor out =
            PrefillAttention(qkv, k_pages, v_pages, table, ints(table_rows), ints(positions),
                             ints(tiles).view({-1, 2}), splits, version);
        EXPECT_LT(MaxDiff(out.narrow(0, 0, total), expected), Tol());
        EXPECT_TRUE(torch::equal(pool, before));
      }
    }
  }
}

TEST_P(CudaKernelsTest, AppendKvWritesEachTokenAtItsPosition) {
  const int64_t heads = 4, head_dim = 64, page_size = 16, max_pages = 4, c = heads * head_dim;
  const int64_t rows = 3, num_pages = rows * max_pages + 1, scratch = num_pages - 1;
  torch::Tensor pool = torch::randn({num_pages, 1, 2, heads, page_size, head_dim}, Opts());
  torch::Tensor k_pages = pool.select(1, 0).select(1, 0);
  torch::Tensor v_pages = pool.select(1, 0).select(1, 1);
  // Rows 0..2 take shuffled pages; row 3 (padding) is all scratch.
  torch::Tensor table =
      torch::cat({torch::randperm(rows * max_pages, torch::kLong).view({rows, max_pages}),
                  torch::full({1, max_pages}, scratch, torch::kLong)})
          .to(torch::kInt);
  // Row 0: positions 0..20 (a fresh prompt over two pages); row 1: 17..19
  // (a suffix); row 2: 63 (a page's last slot); two padding tokens.
  std::vector<int> table_rows, positions;
  auto add = [&](int row, int first, int last) {
    for (int p = first; p <= last; ++p) {
      table_rows.push_back(row);
      positions.push_back(p);
    }
  };
  add(0, 0, 20);
  add(1, 17, 19);
  add(2, 63, 63);
  add(3, 0, 0);
  add(3, 0, 0);
  const int64_t n = static_cast<int64_t>(positions.size());
  torch::Tensor qkv = torch::randn({n, 3 * c}, Opts());
  torch::Tensor expected = pool.clone();
  torch::Tensor table_cpu = table.clone();
  for (int64_t i = 0; i < n; ++i) {
    if (table_rows[i] == 3) continue;
    const int64_t page = table_cpu[table_rows[i]][positions[i] / page_size].item<int64_t>();
    const int64_t slot = positions[i] % page_size;
    for (int kv = 0; kv < 2; ++kv) {
      expected[page][0][kv].select(1, slot).copy_(
          qkv[i].narrow(0, (1 + kv) * c, c).view({heads, head_dim}));
    }
  }
  auto ints = [](const std::vector<int>& v) {
    return torch::tensor(v, torch::TensorOptions().dtype(torch::kInt)).to(torch::kCUDA);
  };
  AppendKv(qkv, k_pages, v_pages, table.to(torch::kCUDA), ints(table_rows), ints(positions));
  const int64_t real = num_pages - 1;
  EXPECT_TRUE(torch::equal(pool.narrow(0, 0, real), expected.narrow(0, 0, real)));
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

// The split-K matrix-vector kernel against addmm (+ GELU, + the residual add)
// on the step's shapes and GPT-2's, at row counts on both sides of the row
// tiles, with split counts from 1 (one SM) to many; the same result twice
// (the splits are added in a fixed order); the residual add in place.
TEST_P(CudaKernelsTest, MatvecMatchesAddmm) {
  const std::vector<std::pair<int64_t, int64_t>> shapes = {
      {64, 192}, {64, 64}, {64, 256}, {256, 64}, {768, 2304}, {3072, 768}, {1600, 4800}};
  for (int sms : {1, MultiprocessorCount()}) {
    MatvecScratch scratch = MakeMatvecScratch(64, shapes, GetParam(), torch::kCUDA);
    scratch.num_sms = sms;
    for (const auto& [k, m] : shapes) {
      torch::Tensor w = torch::randn({k, m}, Opts()) / std::sqrt(static_cast<double>(k));
      torch::Tensor b = torch::randn({m}, Opts());
      for (int64_t rows : {1, 2, 3, 8, 9, 64}) {
        torch::Tensor x = torch::randn({rows, k}, Opts());
        torch::Tensor residual = torch::randn({rows, m}, Opts());
        const torch::Tensor none;
        torch::Tensor product = torch::addmm(b, x, w);  // rounded to the dtype, as the step's
        auto expect_near = [&](const torch::Tensor& got, const torch::Tensor& want,
                               const char* what) {
          const double err = ((got.to(torch::kFloat) - want.to(torch::kFloat)).abs() /
                              (1 + want.to(torch::kFloat).abs()))
                                 .max()
                                 .item<double>();
          EXPECT_LT(err, Tol()) << what << " " << k << "x" << m << " rows " << rows << " sms "
                                << sms;
        };
        torch::Tensor plain = Matvec(x, w, b, false, none, scratch);
        expect_near(plain, product, "bias");
        EXPECT_TRUE(torch::equal(plain, Matvec(x, w, b, false, none, scratch)))
            << "not deterministic: " << k << "x" << m << " rows " << rows;
        expect_near(Matvec(x, w, none, false, none, scratch), torch::mm(x, w), "no bias");
        expect_near(Matvec(x, w, b, true, none, scratch), torch::gelu(product, "tanh"), "gelu");
        // A LayerNorm folded in, as the step's LN1 and LN2.
        torch::Tensor g = 1 + torch::randn({k}, Opts()) / 4, beta = torch::randn({k}, Opts());
        torch::Tensor normed = torch::layer_norm(x, {k}, g, beta, 1e-5);  // rounded, as the step's
        expect_near(Matvec(x, w, b, false, none, scratch, torch::Tensor(), {g, beta, 1e-5}),
                    torch::addmm(b, normed, w), "layer norm");
        expect_near(Matvec(x, w, b, true, none, scratch, torch::Tensor(), {g, beta, 1e-5}),
                    torch::gelu(torch::addmm(b, normed, w), "tanh"), "layer norm, gelu");
        torch::Tensor sum = residual + product;
        Matvec(x, w, b, false, residual, scratch, residual);  // in place
        expect_near(residual, sum, "residual");
      }
    }
    EXPECT_EQ(scratch.counters.nonzero().numel(), 0) << "counters left set";
  }
}

TEST_P(CudaKernelsTest, RejectsMisshapenInputs) {
  torch::Tensor qkv = torch::randn({2, 3 * 64}, Opts());
  torch::Tensor k = torch::randn({5, 4, 8, 16}, Opts()), v = torch::randn({5, 4, 8, 16}, Opts());
  auto int_opts = torch::TensorOptions().dtype(torch::kInt).device(torch::kCUDA);
  torch::Tensor lengths = torch::zeros({2}, int_opts);
  torch::Tensor table = torch::zeros({2, 3}, int_opts);
  EXPECT_THROW(DecodeAttention(qkv, k, v, table, lengths.to(torch::kLong), 1), c10::Error);
  EXPECT_THROW(DecodeAttention(qkv.narrow(1, 0, 64), k, v, table, lengths, 1), c10::Error);
  EXPECT_THROW(DecodeAttention(qkv, k, v, table, lengths, 0), c10::Error);
  EXPECT_THROW(DecodeAttention(qkv, k, v, table, lengths, 1, true, 0), c10::Error);
  EXPECT_THROW(DecodeAttention(qkv, k, v, table.narrow(0, 0, 1), lengths, 1), c10::Error);
  EXPECT_THROW(DecodeAttention(qkv, k, v, table.to(torch::kLong), lengths, 1), c10::Error);
  torch::Tensor x = torch::randn({2, 64}, Opts());
  EXPECT_THROW(AddLayerNorm(x, torch::randn({2, 32}, Opts()), torch::ones({64}, Opts()),
                            torch::zeros({64}, Opts()), 1e-5),
               c10::Error);
  MatvecScratch scratch = MakeMatvecScratch(2, {{64, 64}}, GetParam(), torch::kCUDA);
  const torch::Tensor none;
  torch::Tensor w = torch::randn({64, 64}, Opts());
  EXPECT_THROW(Matvec(x, w.narrow(0, 0, 32), none, false, none, scratch), c10::Error);
  EXPECT_THROW(Matvec(x, torch::randn({64, 62}, Opts()), none, false, none, scratch),
               c10::Error);  // M not a multiple of 16 bytes
  EXPECT_THROW(Matvec(x, w, none, true, torch::randn({2, 64}, Opts()), scratch), c10::Error);
  EXPECT_THROW(Matvec(x, w, none, false, none, scratch, torch::Tensor(),
                      {torch::ones({32}, Opts()), torch::zeros({32}, Opts()), 1e-5}),
               c10::Error);  // LayerNorm of another width
  EXPECT_THROW(Matvec(x, w, none, false, none, scratch, torch::Tensor(),
                      {torch::ones({64}, Opts()), torch::Tensor(), 1e-5}),
               c10::Error);  // a weight without a bias
  EXPECT_THROW(Matvec(torch::randn({3, 64}, Opts()), w, none, false, none, scratch),
               c10::Error);  // more rows than the scratch was made for (splits > 1)
}

INSTANTIATE_TEST_SUITE_P(Dtypes, CudaKernelsTest,
                         ::testing::Values(torch::kFloat, torch::kBFloat16, torch::kHalf),
                         [](const auto& info) {
                           return std::string(info.param == torch::kFloat      ? "fp32"
                                              : info.param == torch::kBFloat16 ? "bf16"
                                                                               : "fp16");
                         });

}  // namespace cuda_kernels_test
}  // namespace nanoserve::cuda
