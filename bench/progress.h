// A progress bar for long sweeps, on stderr. On a terminal it redraws one
// line ("[#####.....]  12/40  31%  elapsed 1m05s  left ~2m20s  <label>");
// elsewhere (a log file) it prints one line per finished point instead.
// The time left is extrapolated from the work done so far, weighted by each
// point's EstimatedCost, not by the count of points.
//
// Thread-compatible.
#ifndef NANOSERVE_BENCH_PROGRESS_H_
#define NANOSERVE_BENCH_PROGRESS_H_

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace nanoserve {

// "1m05s", "42s", "1h02m". Negative counts as 0.
std::string FormatDuration(double seconds);

// The bar's text for `done` of `total` points, with cost done_cost of
// total_cost, after elapsed_s seconds; `width` is the bar's cells.
std::string FormatProgress(int64_t done, int64_t total, double done_cost, double total_cost,
                           double elapsed_s, int width, const std::string& label);

class ProgressBar {
 public:
  // `out` is not owned; `redraw` selects the terminal form.
  ProgressBar(std::FILE* out, bool redraw, int64_t total, double total_cost);

  // A point is about to start (shown on a terminal only).
  void Start(const std::string& label);
  // A point finished (or was skipped) with its cost and a result line.
  void Finish(double cost, const std::string& result);
  // Ends the bar's line.
  void Close();
  double ElapsedSeconds() const;

 private:
  std::FILE* out_;
  bool redraw_;
  int64_t total_;
  double total_cost_;
  int64_t done_ = 0;
  double done_cost_ = 0;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace nanoserve

#endif  // NANOSERVE_BENCH_PROGRESS_H_
