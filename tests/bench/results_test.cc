#include "bench/results.h"
#include "tests/test_util/temp_path.h"

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace nanoserve {
namespace results_test {

TEST(Median, OddEvenAndUnsorted) {
  EXPECT_DOUBLE_EQ(Median({3}), 3);
  EXPECT_DOUBLE_EQ(Median({5, 1, 3}), 3);
  EXPECT_DOUBLE_EQ(Median({4, 1, 3, 2}), 2.5);
  EXPECT_DOUBLE_EQ(Median({10, 1, 1000}), 10);  // an outlier does not move it
}

TEST(Csv, RowHasOneFieldPerColumnInOrder) {
  BenchRow row;
  row.card = "AMD EPYC, 2 cores";  // a comma: must be quoted
  row.model = "random:gpt2";
  row.kv_cache = "on";
  row.batch = 4;
  row.total_ms = 12.5;
  row.peak_mem_bytes = 123456789012;
  const auto fields = SplitCsvLine(FormatCsvRow(row));
  const auto& columns = CsvColumns();
  ASSERT_EQ(fields.size(), columns.size());
  auto field = [&](const std::string& name) {
    for (size_t i = 0; i < columns.size(); ++i) {
      if (columns[i] == name) return fields[i];
    }
    return std::string("<no column>");
  };
  EXPECT_EQ(field("engine"), "nanoserve");
  EXPECT_EQ(field("card"), "AMD EPYC, 2 cores");
  EXPECT_EQ(field("kv_cache"), "on");
  EXPECT_EQ(field("batch"), "4");
  EXPECT_EQ(std::stod(field("total_ms")), 12.5);
  EXPECT_EQ(field("peak_mem_bytes"), "123456789012");
  EXPECT_EQ(SplitCsvLine(CsvHeader()), columns);
}

TEST(Csv, QuotesQuotes) {
  BenchRow row;
  row.model = "dir \"x\"";
  const auto fields = SplitCsvLine(FormatCsvRow(row));
  EXPECT_EQ(fields[3], "dir \"x\"");
  EXPECT_THAT(FormatCsvRow(row), ::testing::HasSubstr("\"dir \"\"x\"\"\""));
}

TEST(CsvWriter, WritesHeaderAndRowsAsItGoes) {
  const std::string path = ::nanoserve::testing::ProcessTempPath("bench_results_test.csv");
  auto writer = CsvWriter::Open(path);
  ASSERT_TRUE(writer.ok()) << writer.status();
  BenchRow row;
  row.sweep = "prompt";
  ASSERT_TRUE(writer->Write(row).ok());
  // Readable before the writer closes: flushed per row.
  std::ifstream in(path);
  std::string header, line, extra;
  ASSERT_TRUE(std::getline(in, header));
  ASSERT_TRUE(std::getline(in, line));
  EXPECT_FALSE(std::getline(in, extra));
  EXPECT_EQ(header, CsvHeader());
  EXPECT_EQ(line, FormatCsvRow(row));
  std::remove(path.c_str());
}

TEST(CsvWriter, UnwritablePathIsAnError) {
  auto writer = CsvWriter::Open("/nonexistent-dir/x.csv");
  ASSERT_FALSE(writer.ok());
  EXPECT_THAT(std::string(writer.status().message()), ::testing::HasSubstr("/nonexistent-dir"));
}

}  // namespace results_test
}  // namespace nanoserve
