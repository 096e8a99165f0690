// CallerQuotas alone: each bound holds per caller, refusals change nothing,
// and what ends (a release, a reaped lease, a Put stream) gives its share
// back.
#include "kv_store/server/caller_quotas.h"

#include <gtest/gtest.h>

namespace nanoserve {
namespace caller_quotas_test {

TEST(CallerQuotasTest, LeasesAndPinnedPagesAreBoundedPerCaller) {
  CallerQuotaOptions o;
  o.max_leases = 2;
  o.max_pinned_pages = 10;
  CallerQuotas q(o);
  const absl::Time t0 = absl::FromUnixSeconds(1000);
  ASSERT_TRUE(q.CheckLease("a").ok());
  q.AddLease(1, "a", {0, 1, 2}, t0);
  q.AddLease(1, "a", {0, 1, 2}, t0);  // counted once
  ASSERT_TRUE(q.CheckLease("a").ok());
  q.AddLease(2, "a", {3, 4, 5}, t0);
  const absl::Status full = q.CheckLease("a");
  EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(full.message().find("--max_leases_per_caller"), absl::string_view::npos);
  EXPECT_TRUE(q.CheckLease("b").ok()) << "another caller is not held back";
  q.EndLease(1);
  EXPECT_TRUE(q.CheckLease("a").ok());
  // One lease of 12 pages may pass the bound; the next is refused.
  ASSERT_TRUE(q.CheckLease("c").ok());
  q.AddLease(10, "c", {20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31}, t0);
  const absl::Status pinned = q.CheckLease("c");
  EXPECT_EQ(pinned.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(pinned.message().find("--max_pinned_pages_per_caller"), absl::string_view::npos);
  EXPECT_EQ(q.UsageOf("c").pinned_pages, 12);
  q.EndLease(10);
  q.AddLease(3, "a", {10, 11, 12, 13, 14, 15, 16, 17, 18}, t0 + absl::Seconds(5));
  EXPECT_EQ(q.UsageOf("a").pinned_pages, 12);
  // Lease 2 idled since t0; lease 3 was renewed later.
  q.RenewLease(3, t0 + absl::Seconds(20));
  EXPECT_EQ(q.ReapIdleLeases(t0 + absl::Seconds(10)), 1);
  EXPECT_EQ(q.UsageOf("a").leases, 1);
  EXPECT_EQ(q.UsageOf("a").pinned_pages, 9);
  q.EndLease(3);
  q.EndLease(3);  // unknown now: ignored
  EXPECT_EQ(q.callers(), 0);
}

// 64 requests in flight on one prompt hold 64 leases on the same pages: the
// pool holds those pages once, and so does the quota (counted per lease,
// the issue's own serving load would pass any bound a pool can hold).
TEST(CallerQuotasTest, LeasesOnTheSamePagesPinThemOnce) {
  CallerQuotaOptions o;
  o.max_pinned_pages = 10;
  CallerQuotas q(o);
  const absl::Time t0 = absl::FromUnixSeconds(1000);
  for (uint64_t id = 1; id <= 64; ++id) {
    ASSERT_TRUE(q.CheckLease("prefill").ok()) << "lease " << id;
    q.AddLease(id, "prefill", {7, 8, 9, 10, 11, 12, 13, 14}, t0);
  }
  EXPECT_EQ(q.UsageOf("prefill").leases, 64);
  EXPECT_EQ(q.UsageOf("prefill").pinned_pages, 8);
  // A longer prompt sharing the head adds only its own pages.
  q.AddLease(65, "prefill", {7, 8, 9, 10, 11, 12, 13, 14, 20, 21, 22}, t0);
  EXPECT_EQ(q.UsageOf("prefill").pinned_pages, 11);
  EXPECT_EQ(q.CheckLease("prefill").code(), absl::StatusCode::kResourceExhausted);
  q.EndLease(65);
  EXPECT_EQ(q.UsageOf("prefill").pinned_pages, 8);
  for (uint64_t id = 1; id < 64; ++id) q.EndLease(id);
  EXPECT_EQ(q.UsageOf("prefill").pinned_pages, 8) << "lease 64 still pins them";
  q.EndLease(64);
  EXPECT_EQ(q.callers(), 0);
}

TEST(CallerQuotasTest, PutStreamsAndTheirBytesAreBoundedPerCaller) {
  CallerQuotaOptions o;
  o.max_puts = 2;
  o.max_put_bytes = 100;
  CallerQuotas q(o);
  ASSERT_TRUE(q.StartPut("a", 60).ok());
  const absl::Status bytes = q.StartPut("a", 50);
  EXPECT_EQ(bytes.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(bytes.message().find("--max_put_mb_per_caller"), absl::string_view::npos);
  ASSERT_TRUE(q.StartPut("a", 40).ok());
  const absl::Status streams = q.StartPut("a", 0);
  EXPECT_EQ(streams.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(streams.message().find("--max_puts_per_caller"), absl::string_view::npos);
  EXPECT_TRUE(q.StartPut("b", 100).ok());
  // A caller's only stream may be larger than its share (the store's bound
  // over all callers governs it), never a second one beside it.
  EXPECT_TRUE(q.StartPut("c", 150).ok());
  EXPECT_EQ(q.StartPut("c", 1).code(), absl::StatusCode::kResourceExhausted);
  q.EndPut("c", 150);
  EXPECT_EQ(q.UsageOf("a").puts, 2);
  EXPECT_EQ(q.UsageOf("a").put_bytes, 100);
  q.EndPut("a", 60);
  EXPECT_TRUE(q.StartPut("a", 60).ok());
  q.EndPut("a", 60);
  q.EndPut("a", 40);
  q.EndPut("b", 100);
  EXPECT_EQ(q.callers(), 0);
}

TEST(CallerQuotasTest, ReservedPagesAreBoundedPerCaller) {
  CallerQuotaOptions o;
  o.max_reserved_pages = 4;
  CallerQuotas q(o);
  ASSERT_TRUE(q.StartReserve("a", 3).ok());
  const absl::Status over = q.StartReserve("a", 2);
  EXPECT_EQ(over.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(over.message().find("--max_reserved_pages_per_caller"), absl::string_view::npos);
  EXPECT_EQ(q.UsageOf("a").reserved_pages, 3) << "a refusal counts nothing";
  ASSERT_TRUE(q.StartReserve("a", 1).ok());
  EXPECT_TRUE(q.StartReserve("b", 4).ok()) << "another caller is not held back";
  // A caller's only reservation may be larger than its share.
  EXPECT_TRUE(q.StartReserve("c", 9).ok());
  EXPECT_EQ(q.StartReserve("c", 1).code(), absl::StatusCode::kResourceExhausted);
  q.EndReserve("a", 3);
  EXPECT_TRUE(q.StartReserve("a", 2).ok());
  q.EndReserve("a", 2);
  q.EndReserve("a", 1);
  q.EndReserve("b", 4);
  q.EndReserve("c", 9);
  EXPECT_EQ(q.callers(), 0);
}

}  // namespace caller_quotas_test
}  // namespace nanoserve
