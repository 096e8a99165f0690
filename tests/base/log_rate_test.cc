// LogRate: at most N lines a second, the refused ones counted into the next
// line allowed, a new second starting from the first line after it.
#include "base/log_rate.h"

#include <gtest/gtest.h>

namespace nanoserve {
namespace log_rate_test {

TEST(LogRateTest, AtMostNASecondAndTheRestCountedIntoTheNext) {
  LogRate rate(2);
  const absl::Time t0 = absl::FromUnixSeconds(1000);
  int64_t skipped = -1;
  EXPECT_TRUE(rate.Allow(t0, &skipped));
  EXPECT_EQ(skipped, 0);
  EXPECT_TRUE(rate.Allow(t0 + absl::Milliseconds(100), &skipped));
  EXPECT_FALSE(rate.Allow(t0 + absl::Milliseconds(200), &skipped));
  EXPECT_FALSE(rate.Allow(t0 + absl::Milliseconds(999), &skipped));
  // A second after the window's first line: a new window.
  EXPECT_TRUE(rate.Allow(t0 + absl::Seconds(1), &skipped));
  EXPECT_EQ(skipped, 2);
  EXPECT_TRUE(rate.Allow(t0 + absl::Milliseconds(1500), &skipped));
  EXPECT_EQ(skipped, 0);
  EXPECT_FALSE(rate.Allow(t0 + absl::Milliseconds(1999), &skipped));
}

}  // namespace log_rate_test
}  // namespace nanoserve
