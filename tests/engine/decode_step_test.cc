// The decode step behind MakeDecodeStep (cuda-graph on a CUDA test device,
// reference on the CPU) against the model's plain forward pass over whole
// sequences, and the cuda-graph path against the reference one.
#include "engine/decode_step.h"

#include <functional>
#include <vector>

#include <gtest/gtest.h>

#include "engine/generate.h"
#include "engine/kv_cache.h"
#include "engine/prefill.h"
#include "tests/test_util/model.h"
#include "tests/test_util/prefix_cache.h"

#ifdef NANOSERVE_WITH_CUDA
#include "engine/cuda/fused_ops.h"
#include "engine/cuda/graph_prefill.h"
#endif

namespace nanoserve {
namespace decode_step_test {

using testing::ExpectSameGreedy;
using testing::FullLogits;
using testing::LogitTolerance;
using testing::TestDevice;
using testing::TinyModel;

std::vector<int> Prompt(int64_t length, int salt) {
  std::vector<int> p;
  for (int64_t i = 0; i < length; ++i) p.push_back(static_cast<int>((i * 37 + salt * 101) % 512));
  return p;
}

TEST(DecodeStepTest, ParsesKindNames) {
  EXPECT_EQ(*ParseDecodeKind("auto"), DecodeKind::kAuto);
  EXPECT_EQ(*ParseDecodeKind("reference"), DecodeKind::kReference);
  EXPECT_EQ(*ParseDecodeKind("cuda-graph"), DecodeKind::kCudaGraph);
  EXPECT_EQ(*ParseDecodeKind("cuda-graph-matvec"), DecodeKind::kCudaGraphMatvec);
  EXPECT_EQ(DecodeKindName(DecodeKind::kCudaGraphMatvec), "cuda-graph-matvec");
  EXPECT_EQ(*ParseDecodeKind("cuda-graph-matvec-ln"), DecodeKind::kCudaGraphMatvecLn);
  EXPECT_EQ(DecodeKindName(DecodeKind::kCudaGraphMatvecLn), "cuda-graph-matvec-ln");
  EXPECT_EQ(*ParseDecodeKind("cuda-graph-eager-prefill"), DecodeKind::kCudaGraphEagerPrefill);
  EXPECT_EQ(DecodeKindName(DecodeKind::kCudaGraphEagerPrefill), "cuda-graph-eager-prefill");
  EXPECT_EQ(*ParseDecodeKind("cuda-graph-cascade"), DecodeKind::kCudaGraphCascade);
  EXPECT_EQ(DecodeKindName(DecodeKind::kCudaGraphCascade), "cuda-graph-cascade");
  EXPECT_FALSE(ParseDecodeKind("graph").ok());
  EXPECT_EQ(DecodeKindName(DecodeKind::kCudaGraph), "cuda-graph");
}

TEST(DecodeStepTest, AutoIsCudaGraphOnlyOnAGpu) {
  auto model = TinyModel();
  auto cache_owned =
      KvCache::Create(model->config(), 2, 16, model->options().dtype, model->options().device)
          .value();
  KvCache& cache = *cache_owned;
  auto step = MakeDecodeStep(model.get(), &cache);
  ASSERT_TRUE(step.ok()) << step.status();
  EXPECT_EQ((*step)->name(), TestDevice().is_cuda() ? "cuda-graph" : "reference");
  auto graph = MakeDecodeStep(model.get(), &cache, DecodeKind::kCudaGraph);
  EXPECT_EQ(graph.ok(), TestDevice().is_cuda());
  if (!graph.ok()) EXPECT_EQ(graph.status().code(), absl::StatusCode::kInvalidArgument);
}

// Rows of unequal length, fewer rows than the cache holds (the cuda-graph
// step pads them to a bucket), steps that cross buckets: each row's logits
// equal the last position's of a forward pass over its whole sequence.
void ExpectLogitsMatchWholeSequenceForward(DecodeKind kind) {
  auto model = TinyModel();
  const std::vector<int64_t> lengths = {5, 1, 17, 33, 9};
  auto cache_owned =
      KvCache::Create(model->config(), 8, 64, model->options().dtype, model->options().device)
          .value();
  KvCache& cache = *cache_owned;
  std::vector<std::vector<int>> seqs;
  for (size_t r = 0; r < lengths.size(); ++r) seqs.push_back(Prompt(lengths[r], r));
  std::vector<torch::Tensor> first = PrefillBatch(*model, cache, seqs, 0);
  auto step = MakeDecodeStep(model.get(), &cache, kind).value();
  const bool cuda = TestDevice().is_cuda();
  EXPECT_EQ(step->name(),
            kind == DecodeKind::kAuto ? (cuda ? "cuda-graph" : "reference") : DecodeKindName(kind));
  std::vector<int64_t> tokens;
  for (size_t r = 0; r < seqs.size(); ++r) tokens.push_back(first[r].argmax(-1).item<int64_t>());
  // 5 rows (bucket 8), then 3 (bucket 4), then 1: the rows left out keep
  // their K/V and lengths.
  for (int64_t rows : {5, 5, 3, 1, 4}) {
    std::vector<int64_t> in(tokens.begin(), tokens.begin() + rows);
    for (int64_t r = 0; r < rows; ++r) seqs[r].push_back(static_cast<int>(in[r]));
    std::vector<int64_t> best;
    torch::Tensor logits = step->Run(in, &best).cpu();
    ASSERT_EQ(logits.size(0), rows);
    for (int64_t r = 0; r < rows; ++r) {
      EXPECT_EQ(cache.length(r), static_cast<int64_t>(seqs[r].size()));
      torch::Tensor expected = FullLogits(*model, seqs[r]).select(0, -1);
      EXPECT_LT((logits[r] - expected).abs().max().item<double>(), LogitTolerance())
          << "row " << r << " after " << rows << "-row step";
      EXPECT_EQ(best[r], logits[r].argmax().item<int64_t>());
      tokens[r] = best[r];
    }
  }
}

TEST(DecodeStepTest, LogitsMatchWholeSequenceForward) {
  ExpectLogitsMatchWholeSequenceForward(DecodeKind::kAuto);
}

// The same with the blocks' products in the split-K matrix-vector kernel
// (every bucket of an 8-row cache takes it).
TEST(DecodeStepTest, MatvecStepLogitsMatchWholeSequenceForward) {
  if (!TestDevice().is_cuda()) GTEST_SKIP() << "cuda-graph-matvec needs a CUDA test device";
  ExpectLogitsMatchWholeSequenceForward(DecodeKind::kCudaGraphMatvec);
}

// And with each block's LayerNorms folded into those products.
TEST(DecodeStepTest, MatvecLnStepLogitsMatchWholeSequenceForward) {
  if (!TestDevice().is_cuda()) GTEST_SKIP() << "cuda-graph-matvec-ln needs a CUDA test device";
  ExpectLogitsMatchWholeSequenceForward(DecodeKind::kCudaGraphMatvecLn);
}

// Prefill through the step (graphs on a GPU): rows 2..6 of an 8-row cache,
// of unequal length, three after cached prefixes of unequal length (one
// ending mid-page), rows 0, 1 and 7 left out. Each row's logits equal the
// last position's of a forward pass over its whole prompt and its length
// is the prompt's; then a decode step over rows 0..6 (the prefilled rows'
// K/V read back) matches too. Three rounds: the same shapes again (graphs
// replayed), then other lengths (another bucket).
void ExpectPrefillMatchesWholeSequenceForward(
    const std::function<std::vector<torch::Tensor>(KvCache&, const std::vector<std::vector<int>>&,
                                                   int64_t)>& prefill,
    const Gpt2Model& model, KvCache& cache, DecodeStep& step, double tolerance = LogitTolerance()) {
  for (int round = 0; round < 3; ++round) {
    for (int64_t r = 0; r < cache.batch(); ++r) cache.Reset(r);
    const std::vector<int64_t> lengths =
        round < 2 ? std::vector<int64_t>{5, 1, 17, 33, 9} : std::vector<int64_t>{40, 2, 70, 33, 96};
    const std::vector<int64_t> cached = {0, 0, 16, 20, 3};
    std::vector<std::vector<int>> prompts;
    for (size_t r = 0; r < lengths.size(); ++r) {
      prompts.push_back(Prompt(lengths[r], static_cast<int>(r) + round));
      if (cached[r] > 0) {
        const std::vector<int> prefix(prompts[r].begin(), prompts[r].begin() + cached[r]);
        PrefillRow(model, cache, 2 + static_cast<int64_t>(r), prefix, 0);
      }
    }
    std::vector<torch::Tensor> logits = prefill(cache, prompts, 2);
    ASSERT_EQ(logits.size(), prompts.size());
    std::vector<int64_t> next(7, 1);
    for (size_t r = 0; r < prompts.size(); ++r) {
      const int64_t row = 2 + static_cast<int64_t>(r);
      EXPECT_EQ(cache.length(row), lengths[r]);
      ASSERT_EQ(logits[r].size(0), 1);
      torch::Tensor expected = FullLogits(model, prompts[r]).select(0, -1);
      EXPECT_LT((logits[r][0].cpu() - expected).abs().max().item<double>(), tolerance)
          << "row " << row << " in round " << round;
      next[row] = expected.argmax().item<int64_t>();
    }
    // The decode step needs room for one more token in each row.
    if (round == 2) continue;
    torch::Tensor step_logits = step.Run(next, nullptr).cpu();
    for (size_t r = 0; r < prompts.size(); ++r) {
      const int64_t row = 2 + static_cast<int64_t>(r);
      std::vector<int> seq = prompts[r];
      seq.push_back(static_cast<int>(next[row]));
      torch::Tensor expected = FullLogits(model, seq).select(0, -1);
      EXPECT_LT((step_logits[row] - expected).abs().max().item<double>(), tolerance)
          << "row " << row << " decoded after round " << round;
    }
  }
}

// DecodeStep::Prefill of `model`'s default step over 8 rows of 96 tokens.
void ExpectStepPrefillMatchesWholeSequenceForward(const Gpt2Model& model,
                                                  double tolerance = LogitTolerance()) {
  auto cache =
      KvCache::Create(model.config(), 8, 96, model.options().dtype, model.options().device).value();
  auto step = MakeDecodeStep(&model, cache.get()).value();
  ExpectPrefillMatchesWholeSequenceForward(
      [&](KvCache&, const std::vector<std::vector<int>>& prompts, int64_t row_begin) {
        return step->Prefill(prompts, row_begin, /*chunk=*/0);
      },
      model, *cache, *step, tolerance);
}

TEST(DecodeStepTest, PrefillMatchesWholeSequenceForward) {
  ExpectStepPrefillMatchesWholeSequenceForward(*TinyModel());
}

#ifdef NANOSERVE_WITH_CUDA
// The graphs' prefill with passes of at most 24 tokens: the rows are cut
// into two passes of their own buckets (and in the last round a row longer
// than that runs eagerly, all of them then).
TEST(DecodeStepTest, GraphPrefillInPassesMatchesWholeSequenceForward) {
  if (!TestDevice().is_cuda()) GTEST_SKIP() << "graph prefill needs a CUDA test device";
  auto model = TinyModel();
  auto cache =
      KvCache::Create(model->config(), 8, 96, model->options().dtype, model->options().device)
          .value();
  auto step = MakeDecodeStep(model.get(), cache.get()).value();
  cuda::GraphPrefill prefill(model.get(), cache.get(), /*max_pass_tokens=*/24);
  EXPECT_EQ(prefill.buckets(), (std::vector<int64_t>{16, 24}));
  ExpectPrefillMatchesWholeSequenceForward(
      [&](KvCache&, const std::vector<std::vector<int>>& prompts, int64_t row_begin) {
        return prefill.Run(prompts, row_begin);
      },
      *model, *cache, *step);
}

// Head size 64 (every GPT-2's): in bf16 and fp16 PrefillAttention runs on
// tensor cores.
TEST(DecodeStepTest, GraphPrefillOfHeadSize64MatchesWholeSequenceForward) {
  if (!TestDevice().is_cuda()) GTEST_SKIP() << "graph prefill needs a CUDA test device";
  Gpt2Config config = testing::TinyConfig();
  config.n_head = 2;
  config.n_embd = 128;
  auto model = TinyModel(AttentionKind::kFused, testing::TinyCheckpoint(config));
  EXPECT_EQ(cuda::PrefillAttentionOnTensorCores(model->options().dtype, 64),
            model->options().dtype != torch::kFloat);
  // Twice the tiny model's tolerance: a model twice as wide has larger
  // logits, and 16-bit rounding errors grow with them (on an H100 in bf16
  // one logit of 15 rows was 0.33 off; a wrong attention is off by units).
  ExpectStepPrefillMatchesWholeSequenceForward(*model, 2 * LogitTolerance());
}

// Shared-prefix (cascade) attention in the step: prompts that share a
// 100-token prefix (96 tokens in whole pages of 16) through the prefix
// cache, so that their rows hold the same leading pages of the pool, in
// batches that group some rows and not others; the greedy tokens equal the
// reference step's (by margin, ExpectSameGreedy), cold and warm. Head size
// 64, where bf16 and fp16 take the shared pass (fp32 runs the plain step).
TEST(DecodeStepTest, CascadeStepTokensEqualReferenceOverSharedPrefixes) {
  if (!TestDevice().is_cuda()) GTEST_SKIP() << "cuda-graph-cascade needs a CUDA test device";
  Gpt2Config config = testing::TinyConfig();
  config.n_head = 2;
  config.n_embd = 128;
  auto model = TinyModel(AttentionKind::kFused, testing::TinyCheckpoint(config));
  auto pool = testing::ModelCache(*model, 16, 256);
  Generator reference(model.get()), cascade(model.get(), pool.get());
  const std::vector<int> shared = Prompt(100, 7);
  auto with = [&](int suffix, int seed) {
    std::vector<int> p = shared;
    const std::vector<int> own = Prompt(suffix, seed);
    p.insert(p.end(), own.begin(), own.end());
    return p;
  };
  const std::vector<std::vector<std::vector<int>>> batches = {
      {with(3, 1), with(20, 2), with(9, 3), with(1, 4)},  // one group of four
      {with(5, 5), Prompt(40, 9), with(33, 6)},           // a group of two and a row alone
      {with(7, 8)},                                       // a row alone
  };
  for (const auto& prompts : batches) {
    GenerateOptions options = testing::GreedyOptions(KvCacheMode::kOn, 24);
    options.decode = DecodeKind::kReference;
    auto want = reference.Generate(prompts, options);
    ASSERT_TRUE(want.ok()) << want.status();
    options = testing::GreedyOptions(KvCacheMode::kPrefix, 24);
    options.decode = DecodeKind::kCudaGraphCascade;
    for (int call = 0; call < 2; ++call) {  // cold, then the prefix cached
      auto got = cascade.Generate(prompts, options);
      ASSERT_TRUE(got.ok()) << got.status();
      const bool takes = model->options().dtype != torch::kFloat;
      EXPECT_EQ(got->stats.decode_step, takes ? "cuda-graph-cascade" : "cuda-graph");
      // Every step groups the rows that share the prefix (none alone):
      // 4, 2 and 0 rows of the batches, 23 steps after the first token.
      const int64_t grouped = prompts.size() == 4 ? 4 : prompts.size() == 3 ? 2 : 0;
      EXPECT_EQ(got->stats.shared_prefix_row_steps, takes ? 23 * grouped : 0);
      for (size_t r = 0; r < prompts.size(); ++r) {
        ExpectSameGreedy(*model, prompts[r], want->sequences[r].output_ids,
                         got->sequences[r].output_ids);
      }
    }
  }
}

// With fused attention a batch whose attention is large runs as
// PrefillBatch's eager passes (here every batch: a bound of one pair).
TEST(DecodeStepTest, GraphPrefillRunsLargeAttentionEagerly) {
  if (!TestDevice().is_cuda()) GTEST_SKIP() << "graph prefill needs a CUDA test device";
  auto model = TinyModel(AttentionKind::kFused);
  auto cache =
      KvCache::Create(model->config(), 8, 96, model->options().dtype, model->options().device)
          .value();
  auto step = MakeDecodeStep(model.get(), cache.get()).value();
  cuda::GraphPrefill prefill(model.get(), cache.get(), cuda::GraphPrefill::kMaxPassTokens,
                             /*eager_above_pairs=*/1);
  ExpectPrefillMatchesWholeSequenceForward(
      [&](KvCache&, const std::vector<std::vector<int>>& prompts, int64_t row_begin) {
        return prefill.Run(prompts, row_begin);
      },
      *model, *cache, *step);
}
#endif

TEST(DecodeStepTest, GeneratorTokensEqualReferenceAcrossBatchesAndCalls) {
  auto model = TinyModel();
  Generator reference(model.get()), fast(model.get());
  GenerateOptions options = testing::GreedyOptions(KvCacheMode::kOn, 24);
  for (int64_t batch : {1, 3, 5, 3}) {
    std::vector<std::vector<int>> prompts;
    for (int64_t r = 0; r < batch; ++r) prompts.push_back(Prompt(4 + 7 * r, r + batch));
    options.decode = DecodeKind::kReference;
    auto want = reference.Generate(prompts, options);
    ASSERT_TRUE(want.ok()) << want.status();
    EXPECT_EQ(want->stats.decode_step, "reference");
    std::vector<DecodeKind> kinds = {DecodeKind::kAuto};
    if (TestDevice().is_cuda()) {
      kinds.push_back(DecodeKind::kCudaGraphMatvec);
      kinds.push_back(DecodeKind::kCudaGraphMatvecLn);
    }
    for (DecodeKind kind : kinds) {
      options.decode = kind;
      for (int call = 0; call < 2; ++call) {  // the second call reuses cache and graphs
        auto got = fast.Generate(prompts, options);
        ASSERT_TRUE(got.ok()) << got.status();
        for (int64_t r = 0; r < batch; ++r) {
          ExpectSameGreedy(*model, prompts[r], want->sequences[r].output_ids,
                           got->sequences[r].output_ids);
        }
      }
    }
  }
}

TEST(DecodeStepTest, RejectsRowsItCannotRun) {
  auto model = TinyModel();
  auto cache_owned =
      KvCache::Create(model->config(), 2, 4, model->options().dtype, model->options().device)
          .value();
  KvCache& cache = *cache_owned;
  auto step = MakeDecodeStep(model.get(), &cache).value();
  EXPECT_THROW(step->Run({}, nullptr), c10::Error);
  EXPECT_THROW(step->Run({1, 2, 3}, nullptr), c10::Error);
  PrefillRow(*model, cache, 0, Prompt(4, 0), 0);  // full
  EXPECT_THROW(step->Run({1}, nullptr), c10::Error);
}

}  // namespace decode_step_test
}  // namespace nanoserve
