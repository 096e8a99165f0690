// The circuit breaker of calls to a peer that may hang.
#include "kv_store/client/circuit_breaker.h"

#include <gtest/gtest.h>

namespace nanoserve {
namespace circuit_breaker_test {

TEST(CircuitBreakerTest, OpensAfterConsecutiveTimeoutsAndClosesOnSuccess) {
  CircuitBreakerOptions options;
  options.failures_to_open = 3;
  options.open_for = absl::Seconds(5);
  CircuitBreaker breaker("kv store", options);
  const absl::Time t0 = absl::FromUnixSeconds(1000);
  const absl::Status timeout = absl::DeadlineExceededError("slow");
  breaker.Record(timeout, t0);
  breaker.Record(absl::UnavailableError("gone"), t0);
  EXPECT_TRUE(breaker.Allow(t0).ok());  // two in a row: still closed
  breaker.Record(timeout, t0);
  const absl::Status refused = breaker.Allow(t0 + absl::Seconds(1));
  EXPECT_EQ(refused.code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(refused.message().find("kv store"), absl::string_view::npos);
  // After open_for a call may try; a failure opens it again at once.
  EXPECT_TRUE(breaker.Allow(t0 + absl::Seconds(5)).ok());
  breaker.Record(timeout, t0 + absl::Seconds(5));
  EXPECT_FALSE(breaker.Allow(t0 + absl::Seconds(6)).ok());
  // A success closes it; an answer that is an error (the peer is there) too.
  EXPECT_TRUE(breaker.Allow(t0 + absl::Seconds(10)).ok());
  breaker.Record(absl::OkStatus(), t0 + absl::Seconds(10));
  breaker.Record(timeout, t0 + absl::Seconds(10));
  breaker.Record(timeout, t0 + absl::Seconds(10));
  breaker.Record(absl::NotFoundError("no lease"), t0 + absl::Seconds(10));
  breaker.Record(timeout, t0 + absl::Seconds(10));
  EXPECT_TRUE(breaker.Allow(t0 + absl::Seconds(10)).ok());
}

// The store SIGSTOPped: every call let through after open_for waited
// out its timeout, stalling prefill. Half-open lets one probe through; the
// rest fail at once until it reports, or until it has been silent open_for.
TEST(CircuitBreakerTest, HalfOpenLetsOneProbeThrough) {
  CircuitBreakerOptions options;
  options.failures_to_open = 2;
  options.open_for = absl::Seconds(5);
  CircuitBreaker breaker("prefill", options);
  const absl::Time t0 = absl::FromUnixSeconds(1000);
  const absl::Status timeout = absl::DeadlineExceededError("slow");
  breaker.Record(timeout, t0);
  breaker.Record(timeout, t0);
  EXPECT_FALSE(breaker.Allow(t0 + absl::Seconds(1)).ok());
  const absl::Time half_open = t0 + absl::Seconds(5);
  EXPECT_TRUE(breaker.Allow(half_open).ok());  // the probe
  for (int i = 0; i < 5; ++i) {
    const absl::Status refused = breaker.Allow(half_open + absl::Milliseconds(i));
    EXPECT_EQ(refused.code(), absl::StatusCode::kUnavailable);
    EXPECT_NE(refused.message().find("probing"), absl::string_view::npos) << refused;
  }
  // The probe fails: open again; the next probe after open_for.
  breaker.Record(timeout, half_open + absl::Seconds(1));
  EXPECT_FALSE(breaker.Allow(half_open + absl::Seconds(2)).ok());
  const absl::Time next = half_open + absl::Seconds(6);
  EXPECT_TRUE(breaker.Allow(next).ok());
  EXPECT_FALSE(breaker.Allow(next).ok());
  // A probe that never reports: another goes after open_for.
  EXPECT_TRUE(breaker.Allow(next + absl::Seconds(5)).ok());
  EXPECT_FALSE(breaker.Allow(next + absl::Seconds(5)).ok());
  // Its success closes the breaker: everyone goes.
  breaker.Record(absl::OkStatus(), next + absl::Seconds(6));
  EXPECT_TRUE(breaker.Allow(next + absl::Seconds(6)).ok());
  EXPECT_TRUE(breaker.Allow(next + absl::Seconds(6)).ok());
}

}  // namespace circuit_breaker_test
}  // namespace nanoserve
