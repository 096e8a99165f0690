// A Prefiller that holds every call until the test opens its gate, so that
// decode calls stay in flight (admitted, counted) as long as a test needs.
// Opened, it fails each call with UNAVAILABLE and decode computes the
// prompt itself; a call whose deadline passes first gets DEADLINE_EXCEEDED.
#ifndef NANOSERVE_TESTS_TEST_UTIL_GATED_PREFILLER_H_
#define NANOSERVE_TESTS_TEST_UTIL_GATED_PREFILLER_H_

#include <atomic>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "prefill_service/prefill_stage.h"

namespace nanoserve::testing {

class GatedPrefiller final : public Prefiller {
 public:
  absl::StatusOr<PrefillOutcome> Prefill(absl::Span<const PrefillPrompt>, absl::Time deadline,
                                         const FirstTokens&) override {
    entered_.fetch_add(1);
    if (open_.WaitForNotificationWithDeadline(deadline)) {
      return absl::UnavailableError("the gated prefiller is open: compute it yourself");
    }
    return absl::DeadlineExceededError("deadline passed at the gated prefiller");
  }
  void Abandon(const PrefillOutcome&) override {}

  void Open() {
    if (!open_.HasBeenNotified()) open_.Notify();
  }
  // Calls that reached Prefill so far.
  int entered() const { return entered_.load(); }
  // Waits until `n` calls have reached Prefill; false after 30 s.
  bool AwaitEntered(int n) const {
    const absl::Time end = absl::Now() + absl::Seconds(30);
    while (entered_.load() < n) {
      if (absl::Now() > end) return false;
      absl::SleepFor(absl::Milliseconds(2));
    }
    return true;
  }

 private:
  absl::Notification open_;
  std::atomic<int> entered_{0};
};

}  // namespace nanoserve::testing

#endif  // NANOSERVE_TESTS_TEST_UTIL_GATED_PREFILLER_H_
