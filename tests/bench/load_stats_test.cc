#include "bench/load_stats.h"

#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "bench/results.h"

namespace nanoserve {
namespace load_stats_test {

using ::testing::HasSubstr;
using ::testing::Not;

// An ok request of `tokens` tokens: first after `ttft`, then every `gap` ms.
RequestRecord Ok(int64_t index, double ttft, double gap, int64_t tokens) {
  RequestRecord r;
  r.index = index;
  r.ok = true;
  r.prompt_tokens = 10;
  r.max_tokens = tokens;
  r.output_tokens = tokens;
  r.ttft_ms = ttft;
  for (int64_t i = 1; i < tokens; ++i) r.itl_ms.push_back(gap);
  r.e2e_ms = ttft + gap * (tokens - 1);
  return r;
}

RequestRecord Failed(int64_t index, const std::string& error) {
  RequestRecord r;
  r.index = index;
  r.error = error;
  return r;
}

TEST(Percentile, InterpolatesBetweenRanksLikeNumpy) {
  const std::vector<double> v = {40, 10, 30, 20};  // sorted: 10 20 30 40
  EXPECT_DOUBLE_EQ(Percentile(v, 0), 10);
  EXPECT_DOUBLE_EQ(Percentile(v, 100), 40);
  EXPECT_DOUBLE_EQ(Percentile(v, 50), 25);
  EXPECT_DOUBLE_EQ(Percentile(v, 90), 37);  // rank 2.7
  EXPECT_DOUBLE_EQ(Percentile({7}, 99), 7);
}

TEST(Percentile, OfOneToHundred) {
  std::vector<double> v;
  for (int i = 100; i >= 1; --i) v.push_back(i);
  EXPECT_DOUBLE_EQ(Percentile(v, 50), 50.5);
  EXPECT_DOUBLE_EQ(Percentile(v, 99), 99.01);
}

TEST(Distribute, MeanAndPercentilesOrEmptyZeros) {
  const Distribution d = Distribute({1, 2, 3, 4, 100});
  EXPECT_EQ(d.count, 5);
  EXPECT_DOUBLE_EQ(d.mean, 22);
  EXPECT_DOUBLE_EQ(d.p50, 3);
  EXPECT_DOUBLE_EQ(d.p90, 61.6);
  EXPECT_DOUBLE_EQ(d.p99, 96.16);
  const Distribution none = Distribute({});
  EXPECT_EQ(none.count, 0);
  EXPECT_EQ(none.p99, 0);
}

TEST(RequestRecord, TimePerOutputTokenExcludesTheFirst) {
  EXPECT_DOUBLE_EQ(Ok(0, 100, 10, 11).tpot_ms(), 10);  // (200 - 100) / 10
  EXPECT_DOUBLE_EQ(Ok(0, 100, 10, 1).tpot_ms(), 0);
}

TEST(MeetsSlo, EachBoundAppliesAndZeroMeansNone) {
  const RequestRecord r = Ok(0, 100, 10, 11);  // TTFT 100, TPOT 10
  EXPECT_TRUE(MeetsSlo(r, Slo{}));
  EXPECT_TRUE(MeetsSlo(r, Slo{100, 10}));  // bounds are inclusive
  EXPECT_FALSE(MeetsSlo(r, Slo{99, 0}));
  EXPECT_FALSE(MeetsSlo(r, Slo{0, 9.5}));
  EXPECT_FALSE(MeetsSlo(Failed(1, "x"), Slo{}));  // a failed request never counts
}

TEST(Summarize, CountsThroughputLatenciesAndGoodput) {
  // Two fast requests, one slow to start, one failed, over 2 seconds.
  const std::vector<RequestRecord> records = {Ok(0, 50, 10, 11), Ok(1, 50, 10, 11),
                                              Ok(2, 500, 20, 6), Failed(3, "UNAVAILABLE: gone")};
  const LoadSummary s = Summarize(records, 2.0, Slo{100, 15});
  EXPECT_EQ(s.ok, 3);
  EXPECT_EQ(s.failed, 1);
  EXPECT_EQ(s.output_tokens, 28);
  EXPECT_EQ(s.prompt_tokens, 30);
  EXPECT_DOUBLE_EQ(s.request_throughput, 1.5);
  EXPECT_DOUBLE_EQ(s.output_throughput, 14);
  EXPECT_DOUBLE_EQ(s.total_token_throughput, 29);
  EXPECT_EQ(s.good, 2);  // the slow one misses TTFT
  EXPECT_DOUBLE_EQ(s.goodput, 1);
  EXPECT_EQ(s.ttft_ms.count, 3);
  EXPECT_DOUBLE_EQ(s.ttft_ms.p50, 50);
  EXPECT_DOUBLE_EQ(s.tpot_ms.mean, 40.0 / 3);
  EXPECT_EQ(s.itl_ms.count, 25);  // 10 + 10 + 5 gaps, pooled
  EXPECT_DOUBLE_EQ(s.itl_ms.p50, 10);
  EXPECT_DOUBLE_EQ(s.itl_ms.p99, 20);
  ASSERT_EQ(s.errors.size(), 1u);
  EXPECT_EQ(s.errors[0].first, "UNAVAILABLE: gone");
  EXPECT_EQ(s.errors[0].second, 1);
}

TEST(Summarize, AllFailedGivesZerosNotNan) {
  const LoadSummary s = Summarize({Failed(0, "b"), Failed(1, "a"), Failed(2, "b")}, 0, Slo{});
  EXPECT_EQ(s.ok, 0);
  EXPECT_EQ(s.failed, 3);
  EXPECT_EQ(s.request_throughput, 0);
  EXPECT_EQ(s.ttft_ms.p99, 0);
  ASSERT_EQ(s.errors.size(), 2u);
  EXPECT_EQ(s.errors[0].first, "b");  // most frequent first
  EXPECT_EQ(s.errors[0].second, 2);
}

TEST(FormatSummaryTables, ShowsCountsSloAndErrors) {
  const LoadSummary s =
      Summarize({Ok(0, 50, 10, 11), Failed(1, "DEADLINE_EXCEEDED: late")}, 1.0, Slo{200, 0});
  const std::string table = FormatSummaryTables(s);
  EXPECT_THAT(table, HasSubstr("| requests ok / failed | 1 / 1 |"));
  EXPECT_THAT(table, HasSubstr("goodput req/s (TTFT <= 200 ms) | 1.000 (1 of 1 ok)"));
  EXPECT_THAT(table, HasSubstr("| TTFT | 50.00 | 50.00 | 50.00 | 50.00 |"));
  EXPECT_THAT(table, HasSubstr("failed x1: DEADLINE_EXCEEDED: late"));
}

TEST(Summarize, TheServersAccountAndTheSecondTokensGap) {
  RequestRecord a = Ok(0, 50, 10, 4), b = Ok(1, 60, 10, 4), c = Ok(2, 70, 10, 4);
  a.itl_ms.front() = 30;  // its second token waited for admission
  a.server.emplace();
  a.server->ttft_ms = 40;
  a.server->prefill_ms = 30;
  a.server->submitted_ms = 45;
  a.server->queue_ms = 2;
  a.server->second_token_ms = 70;  // 23 ms after its admission at 47
  b.server.emplace();
  b.server->ttft_ms = 50;
  b.server->prefill_ms = 20;  // c: none (HTTP, or an older server)
  const LoadSummary s = Summarize({a, b, c}, 1.0, Slo{});
  EXPECT_EQ(s.second_token_ms.count, 3);
  EXPECT_DOUBLE_EQ(s.second_token_ms.mean, 50.0 / 3);
  ASSERT_EQ(s.server_ms.size(), 11u);
  EXPECT_EQ(s.server_ms[0].first, "TTFT at decode");
  EXPECT_EQ(s.server_ms[0].second.count, 2);  // a and b only
  EXPECT_DOUBLE_EQ(s.server_ms[0].second.mean, 45);
  EXPECT_EQ(s.server_ms[1].first, "Prefill call");
  EXPECT_DOUBLE_EQ(s.server_ms[1].second.p50, 25);
  EXPECT_EQ(s.server_ms[10].first, "admission to the second token");
  EXPECT_EQ(s.server_ms[10].second.count, 1);  // b has no second token's time
  EXPECT_DOUBLE_EQ(s.server_ms[10].second.mean, 23);
  const std::string table = FormatSummaryTables(s);
  EXPECT_THAT(table,
              HasSubstr("| the server's account ms (2 requests) | mean | p50 | p90 | p99 |"));
  EXPECT_THAT(table, HasSubstr("| TTFT at decode | 45.00 | 45.00 |"));
  EXPECT_THAT(table, HasSubstr("| second token's gap | 16.67 |"));

  // Without any account, no such table.
  const std::string plain = FormatSummaryTables(Summarize({c}, 1.0, Slo{}));
  EXPECT_THAT(plain, Not(HasSubstr("server's account")));
}

TEST(RequestCsv, OneFieldPerColumnWithQuotedErrors) {
  RequestRecord r = Failed(7, "INTERNAL: a, b");
  const std::vector<std::string> header = SplitCsvLine(RequestCsvHeader());
  const std::vector<std::string> row = SplitCsvLine(FormatRequestCsvRow(2.5, r));
  ASSERT_EQ(row.size(), header.size());
  EXPECT_EQ(row[0], "2.5");
  EXPECT_EQ(row[1], "7");
  EXPECT_EQ(row[2], "0");
  EXPECT_EQ(row[3], "INTERNAL: a, b");
  const std::vector<std::string> ok = SplitCsvLine(FormatRequestCsvRow(1.0 / 0.0, Ok(1, 5, 2, 3)));
  ASSERT_EQ(ok.size(), header.size());
  EXPECT_EQ(ok[0], "inf");
  EXPECT_EQ(ok[9], "3");  // output_tokens
  EXPECT_EQ(ok[14], "");  // no server's account
  RequestRecord served = Ok(2, 5, 2, 3);
  served.server.emplace();
  served.server->ttft_ms = 4.5;
  served.server->queue_ms = 1.25;
  served.server->kv_fetch_skipped = true;
  served.server->fallback_reason = "prefill failed: UNAVAILABLE: x, y";
  const std::vector<std::string> with = SplitCsvLine(FormatRequestCsvRow(1.0, served));
  ASSERT_EQ(with.size(), header.size());
  EXPECT_EQ(header[14], "server_ttft_ms");
  EXPECT_EQ(with[14], "4.500");
  EXPECT_EQ(header[header.size() - 4], "server_queue_ms");
  EXPECT_EQ(with[with.size() - 4], "1.250");
  EXPECT_EQ(header[header.size() - 3], "server_second_token_ms");
  EXPECT_EQ(header[header.size() - 2], "server_kv_fetch_skipped");
  EXPECT_EQ(with[with.size() - 2], "1");
  EXPECT_EQ(header.back(), "server_fallback_reason");
  EXPECT_EQ(with.back(), "prefill failed: UNAVAILABLE: x, y");
}

// The ok requests whose prompt decode computed itself are counted by the
// server's reason and listed under the tables; none, no such line.
TEST(Summarize, FallbacksAreCountedByReason) {
  RequestRecord a = Ok(0, 50, 10, 4), b = Ok(1, 60, 10, 4), c = Ok(2, 70, 10, 4);
  for (RequestRecord* r : {&a, &b, &c}) r->server.emplace();
  a.server->fallback_reason = "kv store fetch failed: NOT_FOUND";
  b.server->fallback_reason = "kv store fetch failed: NOT_FOUND";
  RequestRecord failed = Failed(3, "INTERNAL: boom");
  const LoadSummary s = Summarize({a, b, c, failed}, 1.0, Slo{});
  ASSERT_EQ(s.fallbacks.size(), 1u);
  EXPECT_EQ(s.fallbacks[0].first, "kv store fetch failed: NOT_FOUND");
  EXPECT_EQ(s.fallbacks[0].second, 2);
  EXPECT_THAT(FormatSummaryTables(s),
              HasSubstr("decode computed the prompt itself x2: kv store fetch failed: NOT_FOUND"));
  EXPECT_THAT(FormatSummaryTables(Summarize({c}, 1.0, Slo{})),
              Not(HasSubstr("computed the prompt itself")));
}

TEST(SweepCsv, OneFieldPerColumn) {
  const LoadSummary s = Summarize({Ok(0, 50, 10, 11)}, 1.0, Slo{});
  EXPECT_EQ(SplitCsvLine(FormatSweepCsvRow(4, 8, s)).size(), SplitCsvLine(SweepCsvHeader()).size());
  EXPECT_THAT(FormatSweepTable({{4.0, s}, {8.0, s}}), HasSubstr("| 8 | 1 | 0 |"));
}

}  // namespace load_stats_test
}  // namespace nanoserve
