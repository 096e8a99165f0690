// A circuit breaker for calls to a peer that may hang or go away: after
// `failures_to_open` consecutive calls fail as if the peer were unreachable
// (DEADLINE_EXCEEDED, UNAVAILABLE), calls are refused at once for `open_for`
// instead of each waiting out its deadline. Then it is half-open: ONE call
// (the probe) may try while every other is still refused at once; the
// probe's success closes the breaker, its failure opens it again. A probe
// that reports nothing within `open_for` lets another one through.
// Other errors (NOT_FOUND, INVALID_ARGUMENT, ...) mean the peer answered:
// they close it too.
//
// Thread safety: thread-safe.
#ifndef NANOSERVE_KV_STORE_CLIENT_CIRCUIT_BREAKER_H_
#define NANOSERVE_KV_STORE_CLIENT_CIRCUIT_BREAKER_H_

#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace nanoserve {

struct CircuitBreakerOptions {
  // Consecutive unreachable-peer failures that open the breaker. >= 1.
  int failures_to_open = 3;
  // How long an open breaker refuses calls.
  absl::Duration open_for = absl::Seconds(5);
};

class CircuitBreaker {
 public:
  // `peer` names the peer in the refusal's message.
  CircuitBreaker(std::string peer, const CircuitBreakerOptions& options)
      : peer_(std::move(peer)), options_(options) {}

  // OK if a call may go ahead; UNAVAILABLE while the breaker is open, and
  // while half-open to all but the probe. REQUIRES: a call allowed reports
  // its outcome with Record.
  absl::Status Allow(absl::Time now = absl::Now()) ABSL_LOCKS_EXCLUDED(mu_);
  // Records how an allowed call ended.
  void Record(const absl::Status& outcome, absl::Time now = absl::Now()) ABSL_LOCKS_EXCLUDED(mu_);

 private:
  const std::string peer_;
  const CircuitBreakerOptions options_;
  mutable absl::Mutex mu_;
  int consecutive_failures_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Time open_until_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  // Half-open: until when the probe let through holds the only place.
  absl::Time probe_until_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
};

}  // namespace nanoserve

#endif  // NANOSERVE_KV_STORE_CLIENT_CIRCUIT_BREAKER_H_
