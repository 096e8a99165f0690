// A Prefiller (prefill_stage.h) across the network: the nanoserve-prefill
// service through its gRPC stub. Leases of outcomes that are abandoned are
// released at the KV store the service wrote to.
//
// Thread safety: thread-safe (gRPC stubs are).
#ifndef NANOSERVE_PREFILL_SERVICE_PREFILL_CLIENT_H_
#define NANOSERVE_PREFILL_SERVICE_PREFILL_CLIENT_H_

#include <atomic>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/time/time.h"
#include "kv_cache/prefix_store.h"
#include "kv_store/client/circuit_breaker.h"
#include "nanoserve/v1/prefill.grpc.pb.h"
#include "prefill_service/prefill_stage.h"

namespace nanoserve {

class PrefillClient : public Prefiller {
 public:
  // `stub` and `store` (may be null: nothing to release) are not owned.
  // Each call's deadline is the caller's or `timeout` from now, if sooner.
  // A breaker (kv_store/client/circuit_breaker.h) stops calling a prefill
  // that times out or is unreachable: its calls fail at once (UNAVAILABLE)
  // and the caller computes the prompt itself; half-open, one call probes.
  // Every call names `model_fingerprint`, the caller's model
  // (engine/model_fingerprint.h; empty: not checked): a prefill of another
  // model refuses it with FAILED_PRECONDITION (logged here once), and the
  // caller computes the prompt itself.
  PrefillClient(v1::Prefill::StubInterface* stub, PrefixStore* store, absl::Duration timeout,
                std::string model_fingerprint = "",
                const CircuitBreakerOptions& breaker = CircuitBreakerOptions())
      : stub_(stub),
        store_(store),
        timeout_(timeout),
        model_fingerprint_(std::move(model_fingerprint)),
        breaker_("prefill", breaker) {}

  // The call's gRPC status as an absl::Status on failure; UNAVAILABLE at
  // once while the breaker is open. With `on_first`, over PrefillStream
  // (Start, then Wait: the first tokens come before the pages are stored);
  // else Prefill.
  using Prefiller::Prefill;
  absl::StatusOr<PrefillOutcome> Prefill(absl::Span<const PrefillPrompt> prompts,
                                         absl::Time deadline, const FirstTokens& on_first) override;
  // PrefillStream on gRPC's callback API: the request is sent before Start
  // returns, and on_first runs on gRPC's thread as the first tokens arrive.
  // UNAVAILABLE (from Wait) at once while the breaker is open.
  std::unique_ptr<PendingPrefill> Start(std::vector<PrefillPrompt> prompts, absl::Time deadline,
                                        FirstTokens on_first) override;
  void Abandon(const PrefillOutcome& outcome) override;

  // A finished call's outcome for `prompts` prompts: the breaker told, a
  // refusal logged once, a response that does not answer every prompt
  // abandoned (INTERNAL).
  absl::StatusOr<PrefillOutcome> Finish(const grpc::Status& status,
                                        const v1::PrefillResponse& response, size_t prompts);

 private:
  v1::Prefill::StubInterface* stub_;
  PrefixStore* store_;
  const absl::Duration timeout_;
  const std::string model_fingerprint_;
  CircuitBreaker breaker_;
  std::atomic<bool> refusal_logged_{false};
};

}  // namespace nanoserve

#endif  // NANOSERVE_PREFILL_SERVICE_PREFILL_CLIENT_H_
