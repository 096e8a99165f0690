// CallerQuotas alone: each bound holds per caller, refusals change nothing,
// and what ends (a release, a reaped lease, a Put stream) gives its share
// back.
#include "kv_store/server/caller_quotas.h"

#include <gtest/gtest.h>

namespace nanoserve {
namespace {

TEST(CallerQuotasTest, LeasesAndPinnedPagesAreBoundedPerCaller) {
  CallerQuotaOptions o;
  o.max_leases = 2;
  o.max_pinned_pages = 10;
  CallerQuotas q(o);
  const absl::Time t0 = absl::FromUnixSeconds(1000);
  ASSERT_TRUE(q.CheckLease("a").ok());
  q.AddLease(1, "a", 3, t0);
  q.AddLease(1, "a", 3, t0);  // counted once
  ASSERT_TRUE(q.CheckLease("a").ok());
  q.AddLease(2, "a", 3, t0);
  const absl::Status full = q.CheckLease("a");
  EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(full.message().find("--max_leases_per_caller"), absl::string_view::npos);
  EXPECT_TRUE(q.CheckLease("b").ok()) << "another caller is not held back";
  q.EndLease(1);
  EXPECT_TRUE(q.CheckLease("a").ok());
  q.AddLease(3, "a", 9, t0 + absl::Seconds(5));  // 12 pages: one lease may pass the bound
  const absl::Status pinned = q.CheckLease("a");
  EXPECT_EQ(pinned.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(pinned.message().find("--max_pinned_pages_per_caller"), absl::string_view::npos);
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
  EXPECT_EQ(q.UsageOf("a").puts, 2);
  EXPECT_EQ(q.UsageOf("a").put_bytes, 100);
  q.EndPut("a", 60);
  EXPECT_TRUE(q.StartPut("a", 60).ok());
  q.EndPut("a", 60);
  q.EndPut("a", 40);
  q.EndPut("b", 100);
  EXPECT_EQ(q.callers(), 0);
}

}  // namespace
}  // namespace nanoserve
