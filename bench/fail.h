// What a benchmark command returns when it cannot go on.
#ifndef NANOSERVE_BENCH_FAIL_H_
#define NANOSERVE_BENCH_FAIL_H_

#include <cstdio>

#include "absl/status/status.h"

namespace nanoserve {

// Prints `status` to stderr and returns the exit code 1.
inline int Fail(const absl::Status& status) {
  std::fprintf(stderr, "nanoserve: %s\n", status.ToString().c_str());
  return 1;
}

}  // namespace nanoserve

#endif  // NANOSERVE_BENCH_FAIL_H_
