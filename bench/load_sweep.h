// `nanoserve load`: one run (bench/load_runner.h) per request rate, each
// with its own requests; prints each run's tables on stdout and, with
// several rates, a table of all; writes the per-request CSV, the sweep CSV
// and the throughput-vs-latency plot (bench/load_plot.py, gnuplot).
//
// Thread-compatible: one sweep at a time.
#ifndef NANOSERVE_BENCH_LOAD_SWEEP_H_
#define NANOSERVE_BENCH_LOAD_SWEEP_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "bench/load_client.h"
#include "bench/load_runner.h"
#include "bench/load_stats.h"
#include "bench/load_workload.h"

namespace nanoserve {

struct LoadSweepOptions {
  WorkloadOptions workload;   // run i draws its requests with seed + i
  std::vector<double> rates;  // one run each, in order; infinity = all at once
  LoadRunOptions run;         // rate: each of `rates`; seed + i
  Slo slo;                    // of the goodput
  // With an empty run.cache_salt each run gets its own
  // ("nanoserve-load-<unix ms>-<i>"), so that no run finds prompts that an
  // earlier run (or an earlier `nanoserve load`) cached; shared prefixes
  // are then shared within a run. false: every request uses run.cache_salt.
  bool fresh_cache_salt = true;
  std::string csv_path;        // per-request CSV of every run ("" = none)
  std::string sweep_csv_path;  // one line per run ("" = none; required by plot_path)
  std::string plot_path;       // PNG drawn from the sweep CSV ("" = none)
  std::string plot_script;     // bench/load_plot.py
};

// Errors: INVALID_ARGUMENT for bad options and the workload's errors
// (before any request is sent); writing a file or drawing the plot. Failed
// requests are counted in the tables, not errors.
absl::Status RunLoadSweep(LoadClient& client, const LoadSweepOptions& options);

}  // namespace nanoserve

#endif  // NANOSERVE_BENCH_LOAD_SWEEP_H_
