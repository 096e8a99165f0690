// Reading a Prometheus text page (a service's /metrics) in tests.
#ifndef NANOSERVE_TESTS_TEST_UTIL_METRICS_H_
#define NANOSERVE_TESTS_TEST_UTIL_METRICS_H_

#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"

namespace nanoserve::testing {

// The value on the line of `name` (with its labels, e.g.
// `requests_total{code="OK"}`) in `page`, or -1 when there is none.
inline double MetricValue(const std::string& page, const std::string& name) {
  for (absl::string_view line : absl::StrSplit(page, '\n')) {
    if (absl::ConsumePrefix(&line, name + " ")) return std::stod(std::string(line));
  }
  return -1;
}

}  // namespace nanoserve::testing

#endif  // NANOSERVE_TESTS_TEST_UTIL_METRICS_H_
