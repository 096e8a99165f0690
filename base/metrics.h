// Metrics in the Prometheus text exposition format (version 0.0.4):
// counters, gauges read from a callback at scrape time, and histograms with
// fixed buckets. A family is one metric name; each Add* call adds one label
// set to it ("" for none, else e.g. `code="OK"`).
//
// Thread safety: thread-safe. Add* and Render take a mutex; Counter and
// Histogram updates take the metric's own lock (or an atomic).
#ifndef NANOSERVE_BASE_METRICS_H_
#define NANOSERVE_BASE_METRICS_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"

namespace nanoserve {

class Counter {
 public:
  void Increment(double delta = 1.0);
  double value() const;

 private:
  mutable absl::Mutex mu_;
  double value_ = 0;
};

class Histogram {
 public:
  // REQUIRES: `upper_bounds` strictly increasing (the +Inf bucket is implicit).
  explicit Histogram(std::vector<double> upper_bounds);
  void Observe(double value);

  struct Snapshot {
    std::vector<double> upper_bounds;
    std::vector<uint64_t> cumulative_counts;  // per bound, then +Inf
    double sum = 0;
    uint64_t count = 0;
  };
  Snapshot snapshot() const;

 private:
  const std::vector<double> upper_bounds_;
  mutable absl::Mutex mu_;
  std::vector<uint64_t> counts_;  // per bucket (not cumulative), then +Inf
  double sum_ = 0;
};

// Buckets for latencies in milliseconds, 0.1 ms to 60 s.
std::vector<double> LatencyBucketsMs();

class MetricsRegistry {
 public:
  // The returned pointers live as long as the registry. Adding the same
  // name and labels twice returns the first metric.
  Counter* AddCounter(const std::string& name, const std::string& help,
                      const std::string& labels = "");
  Histogram* AddHistogram(const std::string& name, const std::string& help,
                          std::vector<double> upper_bounds, const std::string& labels = "");
  // `read` is called at every Render, on the rendering thread.
  void AddGauge(const std::string& name, const std::string& help, std::function<double()> read,
                const std::string& labels = "");

  // A counter kept elsewhere (monotonic), read at every Render.
  void AddObservedCounter(const std::string& name, const std::string& help,
                          std::function<double()> read, const std::string& labels = "");

  // The whole page, families in name order.
  std::string Render() const;

 private:
  struct Family {
    std::string help;
    std::string type;  // "counter", "gauge", "histogram"
    std::map<std::string, std::unique_ptr<Counter>> counters;
    std::map<std::string, std::unique_ptr<Histogram>> histograms;
    std::map<std::string, std::function<double()>> observed;  // gauges, observed counters
  };
  Family& FamilyLocked(const std::string& name, const std::string& help, const std::string& type)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable absl::Mutex mu_;
  std::map<std::string, Family> families_ ABSL_GUARDED_BY(mu_);
};

// Calls of one kind by outcome: a counter family `name` with one label set
// per canonical status code (`code="OK"`, `code="INVALID_ARGUMENT"`,
// `code="INTERNAL"`, ...), each made when its code is first counted.
class OutcomeCounter {
 public:
  // `registry` (not owned) may be null: nothing is counted.
  OutcomeCounter(MetricsRegistry* registry, std::string name, std::string help);
  void Count(const absl::Status& status);

 private:
  MetricsRegistry* registry_;
  const std::string name_;
  const std::string help_;
};

}  // namespace nanoserve

#endif  // NANOSERVE_BASE_METRICS_H_
