// When `nanoserve load` sends each request: a Poisson process of a given
// rate (exponential gaps, seeded), or all at once (rate infinity, e.g. with
// a fixed concurrency), and the command line's list of rates.
//
// Thread-compatible: plain functions.
#ifndef NANOSERVE_BENCH_LOAD_SCHEDULE_H_
#define NANOSERVE_BENCH_LOAD_SCHEDULE_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace nanoserve {

// The send times of `n` requests, as offsets from the run's start: the
// first at 0, then gaps drawn from an exponential distribution of mean
// 1/rate seconds (a Poisson process of `rate` requests per second). All 0
// when rate is infinite. Non-decreasing; the same seed gives the same
// times. REQUIRES: n >= 0, rate > 0.
std::vector<absl::Duration> PoissonArrivals(int64_t n, double rate, uint64_t seed);

// Comma-separated request rates per second, each > 0, "inf" for all at
// once: "1,2,4,inf". INVALID_ARGUMENT for an empty list or a bad item.
absl::StatusOr<std::vector<double>> ParseRateList(absl::string_view spec);

}  // namespace nanoserve

#endif  // NANOSERVE_BENCH_LOAD_SCHEDULE_H_
