#include "bench/load_schedule.h"

#include <cmath>
#include <random>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace nanoserve {

std::vector<absl::Duration> PoissonArrivals(int64_t n, double rate, uint64_t seed) {
  std::vector<absl::Duration> times(n, absl::ZeroDuration());
  if (std::isinf(rate)) return times;
  std::mt19937_64 rng(seed);
  std::exponential_distribution<double> gap(rate);
  double t = 0;
  for (int64_t i = 1; i < n; ++i) {
    t += gap(rng);
    times[i] = absl::Seconds(t);
  }
  return times;
}

absl::StatusOr<std::vector<double>> ParseRateList(absl::string_view spec) {
  std::vector<double> rates;
  for (absl::string_view item : absl::StrSplit(spec, ',')) {
    item = absl::StripAsciiWhitespace(item);
    double rate = 0;
    // SimpleAtod takes "inf" (and "infinity") as infinity.
    if (!absl::SimpleAtod(item, &rate) || !(rate > 0)) {
      return absl::InvalidArgumentError(
          absl::StrCat("rate \"", item, "\": expected a number > 0 or inf"));
    }
    rates.push_back(rate);
  }
  return rates;
}

}  // namespace nanoserve
