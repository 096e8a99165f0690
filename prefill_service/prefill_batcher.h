// Gathers concurrent prefill calls into batches, so that a burst of requests
// sharing a system prompt runs as one batch through the engine's plan, which
// computes a prefix shared within a batch once (issue 13).
//
// A call waits in a queue, in order of arrival. One thread (the runner,
// started by the first call that waits) takes batches off the queue and
// runs them one at a time through `RunBatch`. A batch starts
//   * at once on the caller's own thread when a call reaches an idle
//     batcher with nothing waiting and no window (a batch of that call
//     alone: one thread handoff and its wake-up fewer), or
//   * at once when the calls in it arrived while the batch before ran, or
//   * `window` after the first waiting call arrived at an idle batcher, or
//     as soon as max_prompts prompts wait, whichever comes first.
// It takes the first waiting call, then, in order of arrival, every waiting
// call with the same lease holder that fits: at most max_prompts prompts and
// (prompts x longest prompt) <= max_batch_tokens rows, the limits one call
// has alone. Calls that do not fit, or are another holder's, wait for a
// later batch; the first waiting call always goes next, so none starves.
//
// Invariants:
//   * a call is in at most one batch, and every call submitted ends exactly
//     once: with its batch's outcome, or DEADLINE_EXCEEDED (its deadline
//     passed while it waited; it never ran), or UNAVAILABLE (shut down
//     while it waited);
//   * at most one batch runs at a time, on the runner thread or on the
//     thread of the one call it holds (see above);
//   * a call that leaves the queue without running holds nothing.
//
// Thread safety: thread-safe. Submit blocks its caller; RunBatch must not
// call back into the batcher.
#ifndef NANOSERVE_PREFILL_SERVICE_PREFILL_BATCHER_H_
#define NANOSERVE_PREFILL_SERVICE_PREFILL_BATCHER_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "prefill_service/prefill_stage.h"

namespace nanoserve {

struct PrefillBatcherOptions {
  // How long the first call to reach an idle batcher waits for others to
  // join its batch. Zero: not at all; calls then share batches only when
  // they arrive while one runs. >= 0.
  absl::Duration window = absl::ZeroDuration();
  // A batch's limits, as PrefillStageOptions' for one call. >= 1.
  int64_t max_prompts = 64;
  int64_t max_batch_tokens = 65536;
};

// One call in a batch, as PrefillBatcher::RunBatch sees it. The call's
// caller owns it.
struct PrefillCall {
  absl::Span<const PrefillPrompt> prompts;  // validated
  absl::string_view lease_holder;
  absl::Time deadline;
  absl::Time arrival;  // when it was submitted
  absl::Time taken;    // when its batch started
  // The caller's (may be null), and what it was given: SendFirstTokens
  // calls it once at most, and a later outcome carries the same tokens.
  FirstTokens on_first;
  std::vector<int> first_sent;
  // RunBatch's answer: the outcome of this call's prompts alone.
  absl::StatusOr<PrefillOutcome> outcome = absl::UnknownError("not run");

  // Hands the call's first tokens to on_first, the first time only.
  void SendFirstTokens(absl::Span<const int> tokens);
  // Sets `outcome`, its first tokens those already sent if any.
  void Settle(absl::StatusOr<PrefillOutcome> result);
};

class PrefillBatcher {
 public:
  using Call = PrefillCall;
  // Runs one batch (>= 1 calls of one lease holder, within the limits
  // together) and sets every call's outcome.
  using RunBatch = std::function<void(absl::Span<Call* const> batch)>;

  PrefillBatcher(const PrefillBatcherOptions& options, RunBatch run);
  // Shutdown(), then waits until every caller has left Submit.
  ~PrefillBatcher();
  PrefillBatcher(const PrefillBatcher&) = delete;
  PrefillBatcher& operator=(const PrefillBatcher&) = delete;

  // Queues a call and blocks until its batch has run; returns its outcome.
  // DEADLINE_EXCEEDED if `deadline` passes while it waits (it never runs
  // then); UNAVAILABLE after Shutdown. A call taken into a batch stays for
  // the whole batch, whatever its deadline.
  // REQUIRES: `prompts` is non-empty and within the limits on its own.
  // `on_first` goes into the call (PrefillCall::on_first) for RunBatch.
  absl::StatusOr<PrefillOutcome> Submit(absl::Span<const PrefillPrompt> prompts,
                                        absl::string_view lease_holder, absl::Time deadline,
                                        FirstTokens on_first = nullptr) ABSL_LOCKS_EXCLUDED(mu_);

  // Refuses new calls and ends those waiting with UNAVAILABLE; returns once
  // the batch running (if any) is done. Idempotent.
  void Shutdown() ABSL_LOCKS_EXCLUDED(mu_);

  // Calls waiting for a batch (not those in the running one).
  int64_t waiting_calls() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  // A call with the batcher's bookkeeping.
  struct Waiter {
    Call call;
    int64_t longest = 0;  // tokens of its longest prompt
    bool taken = false;   // left the queue (for a batch, or ended)
    bool done = false;    // call.outcome is final
  };

  void Loop() ABSL_LOCKS_EXCLUDED(mu_);
  // Blocks until a batch can start and takes it off the queue; empty once
  // shut down.
  std::vector<Waiter*> NextBatch() ABSL_LOCKS_EXCLUDED(mu_);
  // The batch of the first waiting call (see the header comment); ends the
  // calls whose deadline has passed.
  std::vector<Waiter*> TakeBatchLocked(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Removes `w` from the queue and ends it with `status`.
  void EndLocked(Waiter* w, absl::Status status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool HasWorkOrStopping() const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  bool IsFullOrStopping() const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  bool IsIdle() const ABSL_SHARED_LOCKS_REQUIRED(mu_) { return !running_; }
  bool HasNoCallers() const ABSL_SHARED_LOCKS_REQUIRED(mu_) { return callers_ == 0; }

  const PrefillBatcherOptions options_;
  const RunBatch run_;

  mutable absl::Mutex mu_;
  std::deque<Waiter*> queue_ ABSL_GUARDED_BY(mu_);  // waiting, in order of arrival
  int64_t queued_prompts_ ABSL_GUARDED_BY(mu_) = 0;
  // A batch is taken and not yet done (on the runner or a caller's thread).
  bool running_ ABSL_GUARDED_BY(mu_) = false;
  // When the last batch ended: calls that arrived before waited for it, not
  // for the window.
  absl::Time idle_since_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;  // Shutdown was called
  int64_t callers_ ABSL_GUARDED_BY(mu_) = 0;    // threads inside Submit
  std::thread runner_ ABSL_GUARDED_BY(mu_);     // started by the first call that waits
};

}  // namespace nanoserve

#endif  // NANOSERVE_PREFILL_SERVICE_PREFILL_BATCHER_H_
