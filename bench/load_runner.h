// Runs a `nanoserve load` workload against a LoadClient: each request sent
// at its arrival time (bench/load_schedule.h), or later when `concurrency`
// requests are already in flight; each bounded by a deadline, on a thread of
// its own; a failed call is recorded, never fatal.
//
// Thread-compatible: one run at a time.
#ifndef NANOSERVE_BENCH_LOAD_RUNNER_H_
#define NANOSERVE_BENCH_LOAD_RUNNER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "bench/load_client.h"
#include "bench/load_stats.h"
#include "bench/load_workload.h"

namespace nanoserve {

struct LoadRunOptions {
  double rate = 1;          // requests per second (Poisson); infinity = all at once
  int64_t concurrency = 0;  // most requests in flight; 0 = no limit
  uint64_t seed = 0;        // of the arrival times
  absl::Duration timeout = absl::Minutes(10);  // each request's deadline, from its send
  std::string cache_salt;                      // every request's cache namespace ("" = shared)
};

// One run: the records in workload order and the run's duration (first
// send to the last call's end), in seconds.
struct LoadRun {
  std::vector<RequestRecord> records;
  double duration_s = 0;
};

// Sends every prompt of `workload` and waits for all of them.
LoadRun RunLoad(LoadClient& client, const std::vector<LoadPrompt>& workload,
                const LoadRunOptions& options);

}  // namespace nanoserve

#endif  // NANOSERVE_BENCH_LOAD_RUNNER_H_
