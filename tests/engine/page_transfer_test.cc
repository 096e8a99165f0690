// Batched pool <-> cache transfers equal the per-row reference path
// (GatherPages + KvCache::LoadRow, KvCache::ReadRow + ScatterPages).
#include "engine/page_transfer.h"

#include <gtest/gtest.h>

#include "kv_store/page_copy.h"
#include "tests/test_util/model.h"

namespace nanoserve {
namespace {

constexpr int64_t kPageSize = 4;

torch::Tensor Pool(const Gpt2Config& c, int64_t pages) {
  return torch::randn({pages, c.n_layer, 2, c.n_head, kPageSize, c.head_dim()},
                      torch::TensorOptions(testing::TestDtype()).device(testing::TestDevice()));
}

KvCache Cache(const Gpt2Config& c) {
  return KvCache(c, 3, 32, testing::TestDtype(), testing::TestDevice());
}

TEST(PageTransferTest, LoadRunsEqualsGatherAndLoadRow) {
  const Gpt2Config c = testing::TinyConfig();
  torch::Tensor pool = Pool(c, 10);
  const std::vector<PageRun> runs = {{0, 0, {3, 1, 7}}, {2, 0, {}}, {1, 0, {9, 0}}};
  KvCache batched = Cache(c), reference = Cache(c);
  LoadRuns(pool, runs, batched);
  for (const PageRun& run : runs) {
    if (run.pages.empty()) {
      reference.set_length(run.row, 0);
      continue;
    }
    reference.LoadRow(run.row, GatherPages(pool, run.pages).value());
  }
  EXPECT_EQ(batched.lengths(), reference.lengths());
  EXPECT_EQ(batched.lengths(), (std::vector<int64_t>{12, 8, 0}));
  for (int64_t r = 0; r < 3; ++r) {
    const int64_t n = batched.length(r);
    EXPECT_TRUE(torch::equal(batched.ReadRow(r, 0, n), reference.ReadRow(r, 0, n))) << r;
  }
}

TEST(PageTransferTest, StoreRunsEqualsReadRowAndScatter) {
  const Gpt2Config c = testing::TinyConfig();
  KvCache cache = Cache(c);
  for (int64_t l = 0; l < c.n_layer; ++l) {
    cache.k(l).normal_();
    cache.v(l).normal_();
  }
  torch::Tensor batched = Pool(c, 10), reference = batched.clone();
  // Row 0 positions 4..11 into pages 5, 2; row 2 positions 0..3 into page 8.
  const std::vector<PageRun> runs = {{0, 4, {5, 2}}, {2, 0, {8}}};
  StoreRuns(cache, runs, batched);
  ASSERT_TRUE(ScatterPages(reference, {5, 2}, cache.ReadRow(0, 4, 12)).ok());
  ASSERT_TRUE(ScatterPages(reference, {8}, cache.ReadRow(2, 0, 4)).ok());
  EXPECT_TRUE(torch::equal(batched, reference));
}

}  // namespace
}  // namespace nanoserve
