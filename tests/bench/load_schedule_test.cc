#include "bench/load_schedule.h"

#include <cmath>
#include <limits>
#include <vector>

#include <gtest/gtest.h>

namespace nanoserve {
namespace load_schedule_test {

TEST(PoissonArrivals, StartsAtZeroAndNeverGoesBack) {
  const std::vector<absl::Duration> t = PoissonArrivals(1000, 4.0, 7);
  ASSERT_EQ(t.size(), 1000u);
  EXPECT_EQ(t[0], absl::ZeroDuration());
  for (size_t i = 1; i < t.size(); ++i) EXPECT_GE(t[i], t[i - 1]) << i;
}

TEST(PoissonArrivals, SameSeedSameTimesOtherSeedOtherTimes) {
  EXPECT_EQ(PoissonArrivals(50, 2.0, 1), PoissonArrivals(50, 2.0, 1));
  EXPECT_NE(PoissonArrivals(50, 2.0, 1), PoissonArrivals(50, 2.0, 2));
}

TEST(PoissonArrivals, GapsAverageOneOverRateAndSpreadLikeAnExponential) {
  // Seeded, so this is one fixed sample: 20000 gaps of mean 0.25 s.
  const int64_t n = 20001;
  const std::vector<absl::Duration> t = PoissonArrivals(n, 4.0, 3);
  std::vector<double> gaps;
  for (int64_t i = 1; i < n; ++i) gaps.push_back(absl::ToDoubleSeconds(t[i] - t[i - 1]));
  double sum = 0, sum_sq = 0;
  int64_t longer_than_mean = 0;
  for (double g : gaps) {
    sum += g;
    sum_sq += g * g;
    longer_than_mean += g > 0.25;
  }
  const double mean = sum / gaps.size();
  const double sd = std::sqrt(sum_sq / gaps.size() - mean * mean);
  EXPECT_NEAR(mean, 0.25, 0.01);
  EXPECT_NEAR(sd, 0.25, 0.015);  // an exponential's deviation equals its mean
  // P(gap > mean) = 1/e = 0.368.
  EXPECT_NEAR(static_cast<double>(longer_than_mean) / gaps.size(), std::exp(-1.0), 0.015);
}

TEST(PoissonArrivals, InfiniteRateSendsEverythingAtOnce) {
  for (absl::Duration d : PoissonArrivals(10, std::numeric_limits<double>::infinity(), 0)) {
    EXPECT_EQ(d, absl::ZeroDuration());
  }
  EXPECT_TRUE(PoissonArrivals(0, 1.0, 0).empty());
}

TEST(ParseRateList, NumbersAndInf) {
  auto rates = ParseRateList("0.5, 2,inf");
  ASSERT_TRUE(rates.ok()) << rates.status();
  ASSERT_EQ(rates->size(), 3u);
  EXPECT_DOUBLE_EQ((*rates)[0], 0.5);
  EXPECT_DOUBLE_EQ((*rates)[1], 2);
  EXPECT_TRUE(std::isinf((*rates)[2]));
}

TEST(ParseRateList, RefusesZeroNegativeAndJunk) {
  for (const char* bad : {"", "0", "-1", "1,,2", "fast", "nan"}) {
    EXPECT_FALSE(ParseRateList(bad).ok()) << bad;
  }
}

}  // namespace load_schedule_test
}  // namespace nanoserve
