#include "kv_store/client/circuit_breaker.h"

#include "absl/strings/str_cat.h"

namespace nanoserve {

absl::Status CircuitBreaker::Allow(absl::Time now) {
  absl::MutexLock lock(&mu_);
  if (consecutive_failures_ < options_.failures_to_open) return absl::OkStatus();  // closed
  if (now < open_until_) {
    return absl::UnavailableError(absl::StrCat(
        peer_, ": not called for ", absl::FormatDuration(open_until_ - now), " more, after ",
        consecutive_failures_, " calls in a row found it unreachable"));
  }
  if (now < probe_until_) {
    return absl::UnavailableError(
        absl::StrCat(peer_, ": unreachable in the last ", consecutive_failures_,
                     " calls; one call is probing it, the others are not made meanwhile"));
  }
  probe_until_ = now + options_.open_for;  // this call is the probe
  return absl::OkStatus();
}

void CircuitBreaker::Record(const absl::Status& outcome, absl::Time now) {
  const bool unreachable = outcome.code() == absl::StatusCode::kDeadlineExceeded ||
                           outcome.code() == absl::StatusCode::kUnavailable;
  absl::MutexLock lock(&mu_);
  probe_until_ = absl::InfinitePast();
  if (!unreachable) {
    consecutive_failures_ = 0;
    return;
  }
  if (++consecutive_failures_ >= options_.failures_to_open) open_until_ = now + options_.open_for;
}

}  // namespace nanoserve
