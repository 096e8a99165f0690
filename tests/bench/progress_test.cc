#include "bench/progress.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace nanoserve {
namespace progress_test {

using ::testing::HasSubstr;

TEST(FormatDuration, Units) {
  EXPECT_EQ(FormatDuration(0), "0s");
  EXPECT_EQ(FormatDuration(42.4), "42s");
  EXPECT_EQ(FormatDuration(65), "1m05s");
  EXPECT_EQ(FormatDuration(3720), "1h02m");
  EXPECT_EQ(FormatDuration(-3), "0s");
}

TEST(FormatProgress, BarFollowsCostNotCount) {
  // One of four points done, but it was three quarters of the work.
  const std::string text = FormatProgress(1, 4, 75, 100, 30, 20, "prompt off");
  EXPECT_THAT(text, HasSubstr("[###############.....]"));
  EXPECT_THAT(text, HasSubstr("1/4"));
  EXPECT_THAT(text, HasSubstr("75%"));
  EXPECT_THAT(text, HasSubstr("elapsed 30s"));
  EXPECT_THAT(text, HasSubstr("left ~10s"));  // 30 s for 75 -> 10 s for 25
  EXPECT_THAT(text, HasSubstr("prompt off"));
}

TEST(FormatProgress, StartAndEnd) {
  EXPECT_THAT(FormatProgress(0, 3, 0, 10, 0, 10, ""), HasSubstr("left ?"));
  EXPECT_THAT(FormatProgress(0, 3, 0, 10, 0, 10, ""), HasSubstr("[..........]"));
  EXPECT_THAT(FormatProgress(3, 3, 10, 10, 5, 10, ""), HasSubstr("[##########] 3/3 100%"));
  EXPECT_THAT(FormatProgress(3, 3, 10, 10, 5, 10, ""), HasSubstr("left 0s"));
}

}  // namespace progress_test
}  // namespace nanoserve
