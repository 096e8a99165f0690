#include "base/metrics.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace nanoserve {

void Counter::Increment(double delta) {
  absl::MutexLock lock(&mu_);
  value_ += delta;
}

double Counter::value() const {
  absl::MutexLock lock(&mu_);
  return value_;
}

Histogram::Histogram(std::vector<double> upper_bounds)
    : upper_bounds_(std::move(upper_bounds)), counts_(upper_bounds_.size() + 1, 0) {}

void Histogram::Observe(double value) {
  const size_t bucket =
      std::lower_bound(upper_bounds_.begin(), upper_bounds_.end(), value) - upper_bounds_.begin();
  absl::MutexLock lock(&mu_);
  ++counts_[bucket];
  sum_ += value;
}

Histogram::Snapshot Histogram::snapshot() const {
  Snapshot s;
  s.upper_bounds = upper_bounds_;
  absl::MutexLock lock(&mu_);
  uint64_t running = 0;
  for (uint64_t c : counts_) {
    running += c;
    s.cumulative_counts.push_back(running);
  }
  s.count = running;
  s.sum = sum_;
  return s;
}

OutcomeCounter::OutcomeCounter(MetricsRegistry* registry, std::string name, std::string help)
    : registry_(registry), name_(std::move(name)), help_(std::move(help)) {
  if (registry_ != nullptr) registry_->AddCounter(name_, help_, "code=\"OK\"");
}

void OutcomeCounter::Count(const absl::Status& status) {
  if (registry_ == nullptr) return;
  const std::string labels = absl::StrCat("code=\"", absl::StatusCodeToString(status.code()), "\"");
  registry_->AddCounter(name_, help_, labels)->Increment();
}

std::vector<double> LatencyBucketsMs() {
  return {0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 60000};
}

MetricsRegistry::Family& MetricsRegistry::FamilyLocked(const std::string& name,
                                                       const std::string& help,
                                                       const std::string& type) {
  Family& family = families_[name];
  if (family.type.empty()) {
    family.help = help;
    family.type = type;
  }
  return family;
}

Counter* MetricsRegistry::AddCounter(const std::string& name, const std::string& help,
                                     const std::string& labels) {
  absl::MutexLock lock(&mu_);
  auto& slot = FamilyLocked(name, help, "counter").counters[labels];
  if (slot == nullptr) slot = std::make_unique<Counter>();
  return slot.get();
}

Histogram* MetricsRegistry::AddHistogram(const std::string& name, const std::string& help,
                                         std::vector<double> upper_bounds,
                                         const std::string& labels) {
  absl::MutexLock lock(&mu_);
  auto& slot = FamilyLocked(name, help, "histogram").histograms[labels];
  if (slot == nullptr) slot = std::make_unique<Histogram>(std::move(upper_bounds));
  return slot.get();
}

void MetricsRegistry::AddGauge(const std::string& name, const std::string& help,
                               std::function<double()> read, const std::string& labels) {
  absl::MutexLock lock(&mu_);
  FamilyLocked(name, help, "gauge").observed[labels] = std::move(read);
}

void MetricsRegistry::AddObservedCounter(const std::string& name, const std::string& help,
                                         std::function<double()> read, const std::string& labels) {
  absl::MutexLock lock(&mu_);
  FamilyLocked(name, help, "counter").observed[labels] = std::move(read);
}

namespace {

std::string Braced(const std::string& labels, const std::string& extra = "") {
  std::string inner = labels;
  if (!extra.empty()) inner = inner.empty() ? extra : absl::StrCat(inner, ",", extra);
  return inner.empty() ? "" : absl::StrCat("{", inner, "}");
}

std::string Number(double v) { return absl::StrFormat("%.17g", v); }

}  // namespace

std::string MetricsRegistry::Render() const {
  absl::MutexLock lock(&mu_);
  std::string out;
  for (const auto& [name, family] : families_) {
    absl::StrAppend(&out, "# HELP ", name, " ", family.help, "\n# TYPE ", name, " ", family.type,
                    "\n");
    for (const auto& [labels, counter] : family.counters) {
      absl::StrAppend(&out, name, Braced(labels), " ", Number(counter->value()), "\n");
    }
    for (const auto& [labels, read] : family.observed) {
      absl::StrAppend(&out, name, Braced(labels), " ", Number(read()), "\n");
    }
    for (const auto& [labels, histogram] : family.histograms) {
      const Histogram::Snapshot s = histogram->snapshot();
      for (size_t i = 0; i <= s.upper_bounds.size(); ++i) {
        const std::string le =
            i < s.upper_bounds.size() ? Number(s.upper_bounds[i]) : std::string("+Inf");
        absl::StrAppend(&out, name, "_bucket", Braced(labels, absl::StrCat("le=\"", le, "\"")), " ",
                        s.cumulative_counts[i], "\n");
      }
      absl::StrAppend(&out, name, "_sum", Braced(labels), " ", Number(s.sum), "\n");
      absl::StrAppend(&out, name, "_count", Braced(labels), " ", s.count, "\n");
    }
  }
  return out;
}

}  // namespace nanoserve
