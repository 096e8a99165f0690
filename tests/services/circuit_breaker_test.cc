// The circuit breaker of calls to a peer that may hang.
#include "kv_store/client/circuit_breaker.h"

#include <gtest/gtest.h>

namespace nanoserve {
namespace {

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

}  // namespace
}  // namespace nanoserve
