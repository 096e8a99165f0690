// Timestamps along a request's way to its first token, across the three
// services, to find where a lone request's time goes (docs/services.md, "A
// lone request's first token"). With NANOSERVE_TRACE_FIRST_TOKEN=1 in a
// service's environment each point writes one line to stderr,
//   first-token-trace <point> <microseconds since the epoch>
// (one clock for every process of a host); otherwise a point costs one
// test of a flag read once. scripts/first_token_split.py lines the points
// of several processes' logs up, for requests made one at a time (the
// points carry no request id).
//
// Thread safety: thread-safe.
#ifndef NANOSERVE_BASE_FIRST_TOKEN_TRACE_H_
#define NANOSERVE_BASE_FIRST_TOKEN_TRACE_H_

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "absl/time/clock.h"

namespace nanoserve {

inline bool FirstTokenTraceOn() {
  static const bool on = [] {
    const char* value = std::getenv("NANOSERVE_TRACE_FIRST_TOKEN");
    return value != nullptr && std::strcmp(value, "1") == 0;
  }();
  return on;
}

// `point`: a name without spaces (scripts/first_token_split.py's order).
inline void TraceFirstToken(const char* point) {
  if (!FirstTokenTraceOn()) return;
  std::fprintf(stderr, "first-token-trace %s %lld\n", point,
               static_cast<long long>(absl::GetCurrentTimeNanos() / 1000));
}

}  // namespace nanoserve

#endif  // NANOSERVE_BASE_FIRST_TOKEN_TRACE_H_
