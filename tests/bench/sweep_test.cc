#include "bench/sweep.h"

#include <set>
#include <tuple>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace nanoserve {
namespace sweep_test {

using ::testing::ElementsAre;

TEST(ParseIntList, NumbersAndRanges) {
  EXPECT_THAT(ParseIntList("8,16, 32").value(), ElementsAre(8, 16, 32));
  EXPECT_THAT(ParseIntList("8..1000*2").value(), ElementsAre(8, 16, 32, 64, 128, 256, 512, 1000));
  EXPECT_THAT(ParseIntList("8..512*2").value(), ElementsAre(8, 16, 32, 64, 128, 256, 512));
  EXPECT_THAT(ParseIntList("0..900+300").value(), ElementsAre(0, 300, 600, 900));
  EXPECT_THAT(ParseIntList("0..100+300").value(), ElementsAre(0, 100));
  EXPECT_THAT(ParseIntList("1,0..4+2,4").value(), ElementsAre(1, 0, 2, 4));  // dedup, order kept
}

TEST(ParseIntList, RejectsBadInput) {
  for (const char* bad : {"", "8,", "x", "-1", "8..4*2", "0..8*2", "8..16*1", "8..16", "8..16+0",
                          "1..100000000+1", "8..a*2"}) {
    EXPECT_FALSE(ParseIntList(bad).ok()) << bad;
  }
}

TEST(ParseKindList, MapsEveryNameAndStopsAtTheFirstBadOne) {
  EXPECT_EQ(ParseKindList<AttentionKind>("naive, naive", ParseAttentionKind).value(),
            (std::vector<AttentionKind>{AttentionKind::kNaive, AttentionKind::kNaive}));
  EXPECT_EQ(ParseKindList<SweepKind>("prefix,prompt", ParseSweepKind).value(),
            (std::vector<SweepKind>{SweepKind::kPrefix, SweepKind::kPrompt}));
  EXPECT_EQ(ParseKindList<SweepKind>("prompt,bogus", ParseSweepKind).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE((ParseKindList<SweepKind>("", ParseSweepKind).ok()));
}

TEST(ParseNameList, TrimsAndRejectsEmpty) {
  EXPECT_THAT(ParseNameList("random:gpt2, random:gpt2-xl").value(),
              ElementsAre("random:gpt2", "random:gpt2-xl"));
  EXPECT_FALSE(ParseNameList("a,,b").ok());
  EXPECT_FALSE(ParseNameList("").ok());
}

TEST(ParseSweepKind, RoundTrips) {
  for (SweepKind k : {SweepKind::kPrompt, SweepKind::kOutput, SweepKind::kPrefix}) {
    EXPECT_EQ(ParseSweepKind(SweepKindName(k)).value(), k);
  }
  EXPECT_FALSE(ParseSweepKind("prompts").ok());
}

BenchSpec SmallSpec() {
  BenchSpec spec;
  spec.models = {"m1", "m2"};
  spec.attentions = {AttentionKind::kNaive, AttentionKind::kFused};
  spec.prompt_lens = {8, 64};
  spec.output_lens = {4};
  spec.shared_lens = {0, 32};
  spec.batch_sizes = {1, 4};
  return spec;
}

TEST(ValidateBenchSpec, NamesTheBadField) {
  BenchSpec spec = SmallSpec();
  EXPECT_TRUE(ValidateBenchSpec(spec).ok());
  spec.batch_sizes = {0};
  EXPECT_THAT(std::string(ValidateBenchSpec(spec).message()), ::testing::HasSubstr("batch"));
  spec = SmallSpec();
  spec.prompt_lens = {};
  EXPECT_FALSE(ValidateBenchSpec(spec).ok());
  spec = SmallSpec();
  spec.models.clear();
  EXPECT_FALSE(ValidateBenchSpec(spec).ok());
}

TEST(ExpandPoints, CountsOrderAndModes) {
  const auto points = ExpandPoints(SmallSpec());
  // Per model and attention: prompt 2 lengths x 2 modes + output 1 x 2 +
  // prefix 2 batches x 2 shared x 2 modes = 4 + 2 + 8.
  ASSERT_EQ(points.size(), 2u * 2u * 14u);
  EXPECT_EQ(points[0].model, "m1");
  EXPECT_EQ(points[0].attention, AttentionKind::kNaive);
  EXPECT_EQ(points[0].sweep, SweepKind::kPrompt);
  EXPECT_EQ(points[0].mode, KvCacheMode::kOff);
  EXPECT_EQ(points[1].mode, KvCacheMode::kOn);  // modes adjacent
  EXPECT_EQ(points[0].prompt_len, 8);
  EXPECT_EQ(points[0].output_len, 16);  // fixed_output
  EXPECT_EQ(points[2].prompt_len, 64);
  EXPECT_EQ(points[4].sweep, SweepKind::kOutput);
  EXPECT_EQ(points[4].prompt_len, 16);  // fixed_prompt
  EXPECT_EQ(points[4].output_len, 4);
  const BenchPoint& prefix = points[6];
  EXPECT_EQ(prefix.sweep, SweepKind::kPrefix);
  EXPECT_EQ(prefix.mode, KvCacheMode::kOn);
  EXPECT_EQ(points[7].mode, KvCacheMode::kPrefix);
  EXPECT_EQ(prefix.batch, 1);
  EXPECT_EQ(prefix.shared_len, 0);
  EXPECT_EQ(prefix.prompt_len, 32);  // shared + suffix_len
  EXPECT_EQ(points[13].batch, 4);
  EXPECT_EQ(points[13].shared_len, 32);
  EXPECT_EQ(points[13].prompt_len, 64);
  EXPECT_EQ(points[14].attention, AttentionKind::kFused);
  EXPECT_EQ(points[28].model, "m2");
}

TEST(SameShape, PairsTheComparedModesOfEachShape) {
  const auto points = ExpandPoints(SmallSpec());
  for (size_t i = 0; i + 1 < points.size(); i += 2) {
    EXPECT_TRUE(SameShape(points[i], points[i + 1])) << points[i].Label();
    EXPECT_NE(points[i].mode, points[i + 1].mode);
    if (i + 2 < points.size()) EXPECT_FALSE(SameShape(points[i + 1], points[i + 2])) << i;
  }
}

TEST(SameShape, EveryFieldButTheModeCounts) {
  BenchPoint a;
  a.model = "m";
  a.batch = 4;
  a.shared_len = 32;
  a.prompt_len = 40;
  a.output_len = 8;
  BenchPoint b = a;
  b.mode = KvCacheMode::kPrefix;
  EXPECT_TRUE(SameShape(a, b));
  std::vector<BenchPoint> others(7, a);
  others[0].model = "n";
  others[1].attention = AttentionKind::kFused;
  others[2].sweep = SweepKind::kPrefix;
  others[3].batch = 1;
  others[4].shared_len = 0;
  others[5].prompt_len = 41;
  others[6].output_len = 9;
  for (const BenchPoint& other : others) EXPECT_FALSE(SameShape(a, other)) << other.Label();
}

// The points scripts/timings.py used to time: single prompts (batch 1) of
// (prompt, output) 8+128, 128+128, 512+128, 896+128 and 128+512, cache off
// and on; a batch of 32 sharing 900 tokens + 50 own, 64 output tokens, cache
// on and prefix reuse. One spec holds them all (scripts/gpu/all.sh runs it).
TEST(ExpandPoints, CoversTheFormerTimingsScript) {
  BenchSpec spec;
  spec.prompt_lens = {8, 128, 512, 896};
  spec.fixed_output = 128;
  spec.output_lens = {512};
  spec.fixed_prompt = 128;
  spec.shared_lens = {900};
  spec.batch_sizes = {32};
  spec.suffix_len = 50;
  spec.prefix_output = 64;
  ASSERT_TRUE(ValidateBenchSpec(spec).ok());
  std::set<std::tuple<SweepKind, KvCacheMode, int64_t, int64_t, int64_t, int64_t>> got;
  for (const BenchPoint& p : ExpandPoints(spec)) {
    EXPECT_TRUE(FitsContext(p, 1024)) << p.Label();
    got.insert({p.sweep, p.mode, p.batch, p.shared_len, p.prompt_len, p.output_len});
  }
  for (KvCacheMode mode : {KvCacheMode::kOff, KvCacheMode::kOn}) {
    for (int64_t prompt : {8, 128, 512, 896}) {
      EXPECT_EQ(got.count({SweepKind::kPrompt, mode, 1, 0, prompt, 128}), 1u) << prompt;
    }
    EXPECT_EQ(got.count({SweepKind::kOutput, mode, 1, 0, 128, 512}), 1u);
  }
  for (KvCacheMode mode : {KvCacheMode::kOn, KvCacheMode::kPrefix}) {
    EXPECT_EQ(got.count({SweepKind::kPrefix, mode, 32, 900, 950, 64}), 1u);
  }
  EXPECT_EQ(got.size(), 2u * 4u + 2u + 2u);
}

TEST(FitsContext, PromptPlusOutput) {
  BenchPoint p;
  p.prompt_len = 1000;
  p.output_len = 24;
  EXPECT_TRUE(FitsContext(p, 1024));
  p.output_len = 25;
  EXPECT_FALSE(FitsContext(p, 1024));
}

TEST(MakePrompts, ExactLengthsSharedPrefixDistinctSuffixes) {
  BenchPoint p;
  p.batch = 5;
  p.shared_len = 40;
  p.prompt_len = 48;
  const auto prompts = MakePrompts(p, 100, 7);
  ASSERT_EQ(prompts.size(), 5u);
  std::set<int> first_own;
  for (const auto& row : prompts) {
    ASSERT_EQ(row.size(), 48u);
    for (int t : row) {
      EXPECT_GE(t, 0);
      EXPECT_LT(t, 100);
    }
    EXPECT_TRUE(std::equal(row.begin(), row.begin() + 40, prompts[0].begin()));
    first_own.insert(row[40]);
  }
  EXPECT_EQ(first_own.size(), 5u);  // every row leaves the shared prefix at once
}

TEST(MakePrompts, DeterministicAndIndependentOfMode) {
  BenchPoint a;
  a.prompt_len = 64;
  a.mode = KvCacheMode::kOff;
  BenchPoint b = a;
  b.mode = KvCacheMode::kOn;
  b.attention = AttentionKind::kFused;
  EXPECT_EQ(MakePrompts(a, 50257, 3), MakePrompts(b, 50257, 3));
  EXPECT_NE(MakePrompts(a, 50257, 3), MakePrompts(a, 50257, 4));
  BenchPoint c = a;
  c.prompt_len = 65;
  EXPECT_EQ(MakePrompts(c, 50257, 3)[0].size(), 65u);
}

TEST(EstimatedCost, CacheOffGrowsQuadraticallyCacheOnLinearly) {
  BenchPoint p;
  p.prompt_len = 16;
  p.output_len = 100;
  p.mode = KvCacheMode::kOff;
  const double off_100 = EstimatedCost(p);
  p.output_len = 200;
  const double off_200 = EstimatedCost(p);
  p.mode = KvCacheMode::kOn;
  const double on_200 = EstimatedCost(p);
  p.output_len = 100;
  const double on_100 = EstimatedCost(p);
  EXPECT_GT(off_200 / off_100, 2.5);
  EXPECT_LT(on_200 / on_100, 2.1);
  EXPECT_GT(off_200, on_200);
  // Prefix reuse computes the shared tokens once (prefill-bound: one output).
  p.output_len = 1;
  p.batch = 8;
  p.shared_len = 512;
  p.prompt_len = 544;
  const double on_batch = EstimatedCost(p);
  p.mode = KvCacheMode::kPrefix;
  EXPECT_LT(EstimatedCost(p), on_batch / 3);
}

}  // namespace sweep_test
}  // namespace nanoserve
