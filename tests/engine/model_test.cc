// The model with and without its KV cache: the same logits at every step.
#include "engine/model.h"

#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <limits>

#include "base/torch_status.h"
#include "engine/batch_scheduler.h"
#include "engine/prefill.h"
#include "tests/test_util/model.h"

namespace nanoserve {
namespace model_test {

using testing::FullLogits;
using testing::LogitTolerance;
using testing::TinyModel;

std::vector<int> RandomIds(int64_t n, int64_t vocab, uint64_t seed) {
  auto t = torch::randint(vocab, {n}, at::make_generator<at::CPUGeneratorImpl>(seed));
  std::vector<int> ids(n);
  for (int64_t i = 0; i < n; ++i) ids[i] = static_cast<int>(t[i].item<int64_t>());
  return ids;
}

torch::Tensor Ids(const std::vector<int>& ids, int64_t begin, int64_t len) {
  std::vector<int64_t> v(ids.begin() + begin, ids.begin() + begin + len);
  return torch::tensor(v).view({1, len});
}

torch::Tensor Pos(int64_t begin, int64_t len) {
  return torch::arange(begin, begin + len).view({1, len});
}

// Prefill `prompt_len` tokens with the cache, then feed the rest one at a
// time: every position's logits equal the no-cache pass over the whole sequence.
void ExpectCachedStepsMatchFullPass(AttentionKind attention, int64_t total, int64_t prompt_len) {
  auto model = TinyModel(attention);
  auto ids = RandomIds(total, model->config().vocab_size, total * 31 + prompt_len);
  torch::Tensor full = FullLogits(*model, ids);  // (T, V)
  auto cache_owned =
      KvCache::Create(model->config(), 1, total, model->options().dtype, model->options().device)
          .value();
  KvCache& cache = *cache_owned;
  torch::Tensor first =
      PrefillRow(*model, cache, 0, std::vector<int>(ids.begin(), ids.begin() + prompt_len), 0);
  EXPECT_LE((first[0].cpu() - full[prompt_len - 1]).abs().max().item<double>(), LogitTolerance());
  for (int64_t t = prompt_len; t < total; ++t) {
    auto hidden = model->Forward(Ids(ids, t, 1), Pos(t, 1), {&cache, 0});
    auto step = model->Logits(hidden)[0][0].cpu();
    ASSERT_LE((step - full[t]).abs().max().item<double>(), LogitTolerance()) << "position " << t;
  }
  EXPECT_EQ(cache.length(0), total);
}

TEST(ModelTest, CachedDecodeMatchesFullPassUpToTheContextLimit) {
  for (auto [total, prompt] :
       std::vector<std::pair<int64_t, int64_t>>{{12, 1}, {40, 17}, {96, 50}, {96, 95}}) {
    SCOPED_TRACE(::testing::Message() << "total " << total << " prompt " << prompt);
    ExpectCachedStepsMatchFullPass(AttentionKind::kNaive, total, prompt);
  }
}

TEST(ModelTest, FusedAttentionMatchesToo) {
  if (!FusedAttentionAvailable()) GTEST_SKIP() << "no fused attention in this LibTorch";
  ExpectCachedStepsMatchFullPass(AttentionKind::kFused, 64, 20);
}

TEST(ModelTest, ChunkedPrefillEqualsOnePass) {
  auto model = TinyModel();
  auto ids = RandomIds(70, model->config().vocab_size, 5);
  auto one_owned =
      KvCache::Create(model->config(), 1, 70, model->options().dtype, model->options().device)
          .value();
  KvCache& one = *one_owned;
  torch::Tensor whole = PrefillRow(*model, one, 0, ids, 0).cpu();
  for (int64_t chunk : {1, 7, 32, 69}) {
    auto chunked_owned =
        KvCache::Create(model->config(), 1, 70, model->options().dtype, model->options().device)
            .value();
    KvCache& chunked = *chunked_owned;
    torch::Tensor logits = PrefillRow(*model, chunked, 0, ids, chunk).cpu();
    EXPECT_LE((logits - whole).abs().max().item<double>(), LogitTolerance()) << "chunk " << chunk;
    EXPECT_EQ(chunked.length(0), 70);
    // Positions continued across chunks: the caches hold the same keys.
    EXPECT_LE((chunked.ReadRow(0, 0, 70).value() - one.ReadRow(0, 0, 70).value())
                  .abs()
                  .max()
                  .cpu()
                  .item<double>(),
              LogitTolerance());
  }
}

TEST(ModelTest, BatchedDecodeOfUnequalLengthsMatchesEachRowAlone) {
  auto model = TinyModel();
  const auto& cfg = model->config();
  std::vector<std::vector<int>> prompts = {RandomIds(5, cfg.vocab_size, 1),
                                           RandomIds(23, cfg.vocab_size, 2),
                                           RandomIds(11, cfg.vocab_size, 3)};
  auto batch_owned =
      KvCache::Create(cfg, 3, 40, model->options().dtype, model->options().device).value();
  KvCache& batch = *batch_owned;
  for (int64_t r = 0; r < 3; ++r) PrefillRow(*model, batch, r, prompts[r], 0);
  std::vector<int64_t> next = {7, 8, 9}, positions = {5, 23, 11};
  auto hidden = model->Forward(torch::tensor(next).view({3, 1}),
                               torch::tensor(positions).view({3, 1}), {&batch, 0});
  auto batched = model->Logits(hidden).cpu();  // (3, 1, V)
  for (int64_t r = 0; r < 3; ++r) {
    std::vector<int> seq = prompts[r];
    seq.push_back(static_cast<int>(next[r]));
    auto alone = FullLogits(*model, seq);
    EXPECT_LE((batched[r][0] - alone[seq.size() - 1]).abs().max().item<double>(), LogitTolerance())
        << "row " << r;
    EXPECT_EQ(batch.length(r), positions[r] + 1);
  }
}

TEST(ModelTest, CacheBuffersNeverMove) {
  auto model = TinyModel();
  auto cache_owned =
      KvCache::Create(model->config(), 1, 30, model->options().dtype, model->options().device)
          .value();
  KvCache& cache = *cache_owned;
  void* k0 = cache.k_pages(0).data_ptr();
  void* v1 = cache.v_pages(1).data_ptr();
  PrefillRow(*model, cache, 0, RandomIds(10, model->config().vocab_size, 9), 4);
  for (int64_t t = 10; t < 30; ++t)
    model->Forward(torch::tensor({int64_t{3}}).view({1, 1}), Pos(t, 1), {&cache, 0});
  EXPECT_EQ(cache.k_pages(0).data_ptr(), k0);
  EXPECT_EQ(cache.v_pages(1).data_ptr(), v1);
  EXPECT_EQ(cache.length(0), 30);
  EXPECT_EQ(cache.tables().pages(0).size(), 2u);  // 30 tokens in pages of 16
  EXPECT_TRUE(cache.tables().CheckInvariants().ok());
}

// A pool with room for fewer tokens than the rows ask: the pass that runs
// out fails with RESOURCE_EXHAUSTED (out of KV memory), and the rows stay
// as they were.
TEST(ModelTest, AFullPoolIsOutOfMemoryNotCorruption) {
  auto model = TinyModel();
  auto cache_owned =
      KvCache::Create(model->config(), 2, 64, model->options().dtype, model->options().device,
                      /*page_size=*/8, /*pool_tokens=*/40)
          .value();
  KvCache& cache = *cache_owned;
  const std::vector<int> prompt = RandomIds(24, model->config().vocab_size, 3);
  PrefillRow(*model, cache, 0, prompt, 0);  // 3 of 5 pages
  absl::Status status = RunTorch("prefill", [&] { PrefillRow(*model, cache, 1, prompt, 0); });
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted) << status;
  EXPECT_EQ(cache.length(0), 24);
  EXPECT_EQ(cache.length(1), 0);
  EXPECT_TRUE(cache.tables().CheckInvariants().ok());
}

// A KV cache of bad sizes is a status (what the scheduler and the services
// report), not a throw (a pool with no page to spare: BlockTablesTest).
TEST(ModelTest, KvCacheCreateSaysWhyItCannot) {
  auto model = TinyModel();
  const Gpt2Config& cfg = model->config();
  const auto dtype = model->options().dtype;
  const auto device = model->options().device;
  EXPECT_EQ(KvCache::Create(cfg, 0, 16, dtype, device).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(KvCache::Create(cfg, 1, 16, dtype, device, /*page_size=*/0).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(KvCache::Create(cfg, 1, 16, dtype, device, 16, /*pool_tokens=*/-1).status().code(),
            absl::StatusCode::kInvalidArgument);
  // 2^50 tokens of K/V: more pages than 32-bit page ids address.
  auto huge = KvCache::Create(cfg, 1, 16, dtype, device, 16, int64_t{1} << 50);
  EXPECT_EQ(huge.status().code(), absl::StatusCode::kInvalidArgument) << huge.status();
  BatchSchedulerOptions options;
  options.pool_tokens = int64_t{1} << 50;
  EXPECT_EQ(BatchScheduler::Create(model.get(), options).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ModelTest, CreateRejectsMisshapenWeights) {
  Checkpoint ckpt = testing::TinyCheckpoint();
  ckpt.weights["h.1.mlp.c_fc.weight"] = torch::zeros({3, 3});
  auto model = Gpt2Model::Create(ckpt, {});
  ASSERT_FALSE(model.ok());
  EXPECT_NE(model.status().message().find("h.1.mlp.c_fc.weight"), std::string::npos);
}

}  // namespace model_test
}  // namespace nanoserve

namespace nanoserve {
namespace model_test {

// A checkpoint with a NaN or an infinity anywhere is refused, naming the
// tensor (it loaded silently before and poisoned every output).
TEST(ModelTest, NonFiniteWeightsAreRefused) {
  for (float bad :
       {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
    Checkpoint ckpt = testing::TinyCheckpoint();
    ckpt.weights.at("h.1.mlp.c_fc.weight")[3][5] = bad;
    auto model = Gpt2Model::Create(ckpt, ModelOptions());
    ASSERT_FALSE(model.ok());
    EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(model.status().message().find("h.1.mlp.c_fc.weight"), std::string::npos)
        << model.status();
  }
}

}  // namespace model_test
}  // namespace nanoserve
