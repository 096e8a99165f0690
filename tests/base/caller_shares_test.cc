// CallerShares: a caller past its bound is refused with a message naming it,
// the bound and the flag, while another caller is admitted; what a caller
// gives back makes room again; a caller with nothing may take one amount of
// any size.
#include "base/caller_shares.h"

#include <gtest/gtest.h>

#include <string>

namespace nanoserve {
namespace caller_shares_test {

CallerSharesOptions Bound(int64_t bound) {
  CallerSharesOptions o;
  o.bound_per_caller = bound;
  o.what = "tokens of work in flight";
  o.owner = "decode";
  o.flag = "--max_tokens_in_flight_per_caller";
  return o;
}

TEST(CallerSharesTest, ACallerAtItsBoundIsRefusedWhileAnotherIsAdmitted) {
  CallerShares shares(Bound(100));
  ASSERT_TRUE(shares.Take("ipv4:10.0.0.7", 60).ok());
  ASSERT_TRUE(shares.Take("ipv4:10.0.0.7", 40).ok());  // exactly at the bound
  const absl::Status refused = shares.Take("ipv4:10.0.0.7", 1);
  EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted);
  for (const std::string& part :
       {"caller 'ipv4:10.0.0.7'", "has 100 tokens of work in flight", "1 more", "decode's bound",
        "100", "--max_tokens_in_flight_per_caller"}) {
    EXPECT_NE(refused.message().find(part), absl::string_view::npos) << part << ": " << refused;
  }
  EXPECT_EQ(shares.HeldBy("ipv4:10.0.0.7"), 100);  // the refusal counted nothing
  EXPECT_TRUE(shares.Take("prefill", 100).ok());
  EXPECT_EQ(shares.callers(), 2);
  EXPECT_EQ(shares.largest(), 100);
  EXPECT_EQ(shares.refused(), 1);
}

TEST(CallerSharesTest, WhatIsGivenBackMakesRoomAndEmptyCallersAreForgotten) {
  CallerShares shares(Bound(100));
  ASSERT_TRUE(shares.Take("", 70).ok());
  EXPECT_FALSE(shares.Take("", 31).ok());
  const absl::Status anonymous = shares.Take("", 31);
  EXPECT_NE(anonymous.message().find("an anonymous caller"), absl::string_view::npos) << anonymous;
  shares.Give("", 70);
  EXPECT_EQ(shares.HeldBy(""), 0);
  EXPECT_EQ(shares.callers(), 0);
  EXPECT_TRUE(shares.Take("", 31).ok());
  shares.Give("", 31);
  shares.Give("nobody", 5);  // ignored
  EXPECT_EQ(shares.callers(), 0);
  EXPECT_EQ(shares.largest(), 0);
}

// A bound below one request's size keeps the caller to one such request at
// a time; it never makes the request impossible.
TEST(CallerSharesTest, ACallerWithNothingMayTakeOneAmountOfAnySize) {
  CallerShares shares(Bound(10));
  ASSERT_TRUE(shares.Take("a", 500).ok());
  EXPECT_FALSE(shares.Take("a", 1).ok());
  EXPECT_TRUE(shares.Take("b", 500).ok());
  shares.Give("a", 500);
  EXPECT_TRUE(shares.Take("a", 500).ok());
  EXPECT_TRUE(shares.Take("c", 0).ok());  // nothing: nothing counted
  EXPECT_EQ(shares.callers(), 2);
}

}  // namespace caller_shares_test
}  // namespace nanoserve
