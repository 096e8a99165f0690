// One quantity shared between callers with a bound per caller, so that one
// caller cannot take all of it from the others: decode's tokens of work in
// flight (--max_tokens_in_flight_per_caller). A caller is a key: CallerKeyOf
// (base/tls.h) for a gRPC call, the client address for an HTTP one; "" is
// one anonymous caller like any other.
//
// Take counts an amount against its caller, or refuses it, counting
// nothing, with RESOURCE_EXHAUSTED naming the caller, what it holds, the
// bound and the flag that sets it. A caller that holds nothing may take one
// amount of any size (the bound over all callers, kept elsewhere, still
// applies): a bound set below one request's size never makes that request
// impossible, it only keeps the caller to one at a time. Give returns what
// Take counted; a caller that holds nothing is forgotten.
//
// Thread safety: thread-safe.
#ifndef NANOSERVE_BASE_CALLER_SHARES_H_
#define NANOSERVE_BASE_CALLER_SHARES_H_

#include <cstdint>
#include <string>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"

namespace nanoserve {

struct CallerSharesOptions {
  // Each caller holds at most this much at once (beyond a lone first
  // amount). > 0.
  int64_t bound_per_caller = 1;
  // What is counted, for messages: "tokens of work in flight".
  std::string what = "units";
  // Whose bound and the flag that sets it, for messages: "decode",
  // "--max_tokens_in_flight_per_caller".
  std::string owner;
  std::string flag;
};

class CallerShares {
 public:
  explicit CallerShares(CallerSharesOptions options) : options_(std::move(options)) {}

  // Counts `amount` (>= 0) against `caller`, or RESOURCE_EXHAUSTED (nothing
  // counted) when the caller holds some already and `amount` more would
  // take it past the bound. REQUIRES: Give(caller, amount) once it is
  // returned, when this returned OK.
  absl::Status Take(const std::string& caller, int64_t amount) ABSL_LOCKS_EXCLUDED(mu_);
  void Give(const std::string& caller, int64_t amount) ABSL_LOCKS_EXCLUDED(mu_);

  // What `caller` holds now (0 when nothing).
  int64_t HeldBy(const std::string& caller) const ABSL_LOCKS_EXCLUDED(mu_);
  // Callers holding anything now, and the most one of them holds.
  int64_t callers() const ABSL_LOCKS_EXCLUDED(mu_);
  int64_t largest() const ABSL_LOCKS_EXCLUDED(mu_);
  // Refusals so far.
  int64_t refused() const ABSL_LOCKS_EXCLUDED(mu_);
  const CallerSharesOptions& options() const { return options_; }

 private:
  const CallerSharesOptions options_;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, int64_t> held_ ABSL_GUARDED_BY(mu_);  // > 0 each
  int64_t refused_ ABSL_GUARDED_BY(mu_) = 0;
};

// "caller 'x'", or "an anonymous caller" for "": how messages name a caller.
std::string DescribeCaller(const std::string& caller);

}  // namespace nanoserve

#endif  // NANOSERVE_BASE_CALLER_SHARES_H_
