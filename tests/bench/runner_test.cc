// RunBench end to end on a tiny checkpoint: the CSV has one row per point
// that fits the context, both modes of each sweep, exact lengths, and Part C's
// prompt token accounting; the compared modes give the same greedy tokens.
#include "bench/runner.h"

#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "bench/results.h"
#include "engine/checkpoint.h"
#include "tests/test_util/model.h"

namespace nanoserve {
namespace runner_test {

class RunBenchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Per-test paths: ctest runs the tests of this fixture in parallel.
    const std::string name = ::testing::UnitTest::GetInstance()->current_test_info()->name();
    dir_ = ::testing::TempDir() + "/bench_runner_test_model_" + name;
    // A context of 96 tokens; logits spread out, so greedy tokens have clear
    // margins and the compared modes must agree.
    ASSERT_TRUE(SaveCheckpoint(dir_, testing::TinyCheckpoint()).ok());
    options_.spec.models = {dir_};
    options_.spec.prompt_lens = {4, 80, 90};  // 90 + 8 > 96: skipped
    options_.spec.fixed_output = 8;
    options_.spec.output_lens = {2, 8};
    options_.spec.fixed_prompt = 5;
    options_.spec.shared_lens = {0, 32};
    options_.spec.batch_sizes = {1, 3};
    options_.spec.suffix_len = 8;
    options_.spec.prefix_output = 2;
    options_.repeats = 2;
    options_.warmup = 1;
    options_.progress = false;
    options_.csv_path = ::testing::TempDir() + "/bench_runner_test_" + name + ".csv";
  }

  // The CSV's rows as column -> value maps.
  std::vector<std::map<std::string, std::string>> ReadRows() {
    std::ifstream in(options_.csv_path);
    std::string line;
    std::getline(in, line);
    const auto columns = SplitCsvLine(line);
    std::vector<std::map<std::string, std::string>> rows;
    while (std::getline(in, line)) {
      const auto fields = SplitCsvLine(line);
      std::map<std::string, std::string> row;
      for (size_t i = 0; i < columns.size() && i < fields.size(); ++i) row[columns[i]] = fields[i];
      rows.push_back(row);
    }
    return rows;
  }

  std::string dir_;
  BenchOptions options_;
};

TEST_F(RunBenchTest, WritesEveryFittingPointWithBothModes) {
  auto results = RunBench(options_);
  ASSERT_TRUE(results.ok()) << results.status();
  const auto rows = ReadRows();
  // prompt: 2 fitting lengths x 2 modes; output: 2 x 2; prefix: 2 batches x 2 shared x 2.
  ASSERT_EQ(rows.size(), 4u + 4u + 8u);
  for (const auto& r : rows) {
    EXPECT_EQ(r.at("engine"), "nanoserve");
    EXPECT_EQ(r.at("device"), "cpu");
    EXPECT_EQ(r.at("model"), dir_);
    EXPECT_EQ(r.at("repeats"), "2");
    EXPECT_GT(std::stod(r.at("total_ms")), 0);
    EXPECT_LE(std::stod(r.at("total_ms_min")), std::stod(r.at("total_ms")));
    EXPECT_GE(std::stod(r.at("total_ms_max")), std::stod(r.at("total_ms")));
    EXPECT_GT(std::stoll(r.at("peak_mem_bytes")), 0);
    EXPECT_GT(std::stoll(r.at("weights_bytes")), 0);
    EXPECT_EQ(r.at("mem_source"), "process-rss");
  }
  EXPECT_EQ(rows[0].at("sweep"), "prompt");
  EXPECT_EQ(rows[0].at("kv_cache"), "off");
  EXPECT_EQ(rows[1].at("kv_cache"), "on");
  EXPECT_EQ(rows[2].at("prompt_len"), "80");
  EXPECT_EQ(rows[2].at("output_len"), "8");
  EXPECT_EQ(rows[4].at("sweep"), "output");
  EXPECT_EQ(rows[4].at("prompt_len"), "5");
  // Part C, batch 3 sharing 32 tokens (two whole pages) + 8 own each:
  // asked 3 x 40; with reuse the shared 32 are computed once (the batch's
  // branch point), then each prompt takes them from the cache and computes 8.
  const auto& on = rows[14];
  const auto& prefix = rows[15];
  ASSERT_EQ(on.at("sweep"), "prefix");
  EXPECT_EQ(on.at("batch"), "3");
  EXPECT_EQ(on.at("shared_len"), "32");
  EXPECT_EQ(on.at("kv_cache"), "on");
  EXPECT_EQ(on.at("prompt_tokens"), "120");
  EXPECT_EQ(on.at("prompt_tokens_computed"), "120");
  EXPECT_EQ(prefix.at("kv_cache"), "prefix");
  EXPECT_EQ(prefix.at("prompt_tokens"), "120");
  EXPECT_EQ(prefix.at("prompt_tokens_computed"), "56");
  EXPECT_EQ(prefix.at("prompt_tokens_reused"), "96");
  // The results are the CSV's rows, in order.
  ASSERT_EQ(results->size(), rows.size());
  for (size_t i = 0; i < rows.size(); ++i) {
    EXPECT_EQ((*results)[i].row.kv_cache, rows[i].at("kv_cache")) << i;
    EXPECT_EQ(std::to_string((*results)[i].row.prompt_len), rows[i].at("prompt_len")) << i;
  }
}

TEST_F(RunBenchTest, ComparedModesGiveTheSameGreedyTokens) {
  auto results = RunBench(options_);
  ASSERT_TRUE(results.ok()) << results.status();
  ASSERT_EQ(results->size(), 16u);
  // Each shape's first mode (off; on for prefix) has nothing to compare
  // with; the second is compared with it.
  for (size_t i = 0; i < results->size(); i += 2) {
    const BenchResult& first = (*results)[i];
    const BenchResult& second = (*results)[i + 1];
    EXPECT_FALSE(first.same_tokens.has_value()) << i << " " << first.row.kv_cache;
    ASSERT_TRUE(second.same_tokens.has_value()) << i + 1 << " " << second.row.kv_cache;
    EXPECT_TRUE(*second.same_tokens) << i + 1 << " " << second.row.sweep << " "
                                     << second.row.kv_cache << " P=" << second.row.prompt_len;
  }
}

TEST_F(RunBenchTest, TimeLimitSkipsTheRest) {
  options_.max_seconds = 1e-9;  // over before the first point starts
  auto results = RunBench(options_);
  ASSERT_TRUE(results.ok()) << results.status();
  EXPECT_TRUE(results->empty());
  EXPECT_TRUE(ReadRows().empty());
}

TEST_F(RunBenchTest, BadOptionsAreErrors) {
  BenchOptions bad = options_;
  bad.repeats = 0;
  EXPECT_EQ(RunBench(bad).status().code(), absl::StatusCode::kInvalidArgument);
  bad = options_;
  bad.csv_path.clear();
  EXPECT_EQ(RunBench(bad).status().code(), absl::StatusCode::kInvalidArgument);
  bad = options_;
  bad.spec.batch_sizes = {0};
  EXPECT_EQ(RunBench(bad).status().code(), absl::StatusCode::kInvalidArgument);
  bad = options_;
  bad.spec.models = {"random:no-such-preset"};
  EXPECT_FALSE(RunBench(bad).ok());
}

}  // namespace runner_test
}  // namespace nanoserve
