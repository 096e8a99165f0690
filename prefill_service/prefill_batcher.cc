#include "prefill_service/prefill_batcher.h"

#include <algorithm>
#include <cstddef>
#include <utility>

#include "absl/status/status.h"
#include "absl/time/clock.h"

namespace nanoserve {
namespace {

// A call whose deadline passed before its batch started (it never ran).
absl::Status QueuedPastDeadline() {
  return absl::DeadlineExceededError("deadline passed while queued for prefill");
}

}  // namespace

PrefillBatcher::PrefillBatcher(const PrefillBatcherOptions& options, RunBatch run)
    : options_(options), run_(std::move(run)) {}

PrefillBatcher::~PrefillBatcher() {
  Shutdown();
  std::thread runner;
  {
    absl::MutexLock lock(&mu_);
    runner = std::move(runner_);
  }
  if (runner.joinable()) runner.join();
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(this, &PrefillBatcher::HasNoCallers));
}

void PrefillCall::SendFirstTokens(absl::Span<const int> tokens) {
  if (!first_sent.empty()) return;
  first_sent.assign(tokens.begin(), tokens.end());
  if (on_first) on_first(tokens);
}

void PrefillCall::Settle(absl::StatusOr<PrefillOutcome> result) {
  if (result.ok() && !first_sent.empty()) {
    for (size_t r = 0; r < result->prompts.size() && r < first_sent.size(); ++r) {
      result->prompts[r].first_token = first_sent[r];
    }
  }
  outcome = std::move(result);
}

absl::StatusOr<PrefillOutcome> PrefillBatcher::Submit(absl::Span<const PrefillPrompt> prompts,
                                                      absl::string_view lease_holder,
                                                      absl::Time deadline, FirstTokens on_first) {
  Waiter w;
  w.call.prompts = prompts;
  w.call.on_first = std::move(on_first);
  w.call.lease_holder = lease_holder;
  w.call.deadline = deadline;
  w.call.arrival = absl::Now();
  for (const PrefillPrompt& p : prompts) {
    w.longest = std::max<int64_t>(w.longest, static_cast<int64_t>(p.tokens.size()));
  }
  absl::MutexLock lock(&mu_);
  if (stopping_) return absl::UnavailableError("prefill is shutting down");
  // Alone at an idle batcher with no window to wait: the batch is this call
  // alone, so it runs here, without handing it to the runner and back.
  if (options_.window == absl::ZeroDuration() && !running_ && queue_.empty()) {
    if (w.call.arrival >= deadline) {
      return QueuedPastDeadline();
    }
    running_ = true;
    ++callers_;
    w.call.taken = absl::Now();
    Call* const calls[] = {&w.call};
    mu_.Unlock();
    run_(calls);
    mu_.Lock();
    running_ = false;
    idle_since_ = absl::Now();
    --callers_;
    return std::move(w.call.outcome);
  }
  if (!runner_.joinable()) runner_ = std::thread([this] { Loop(); });
  ++callers_;
  queue_.push_back(&w);
  queued_prompts_ += static_cast<int64_t>(prompts.size());
  if (!mu_.AwaitWithDeadline(absl::Condition(&w.taken), deadline)) {
    EndLocked(&w, QueuedPastDeadline());
  }
  mu_.Await(absl::Condition(&w.done));
  --callers_;
  return std::move(w.call.outcome);
}

void PrefillBatcher::Shutdown() {
  absl::MutexLock lock(&mu_);
  stopping_ = true;
  while (!queue_.empty()) {
    EndLocked(queue_.front(), absl::UnavailableError("prefill is shutting down"));
  }
  mu_.Await(absl::Condition(this, &PrefillBatcher::IsIdle));
}

int64_t PrefillBatcher::waiting_calls() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int64_t>(queue_.size());
}

void PrefillBatcher::Loop() {
  for (;;) {
    const std::vector<Waiter*> batch = NextBatch();
    if (batch.empty()) return;
    std::vector<Call*> calls;
    calls.reserve(batch.size());
    for (Waiter* w : batch) calls.push_back(&w->call);
    run_(calls);
    absl::MutexLock lock(&mu_);
    for (Waiter* w : batch) w->done = true;
    running_ = false;
    idle_since_ = absl::Now();
  }
}

std::vector<PrefillBatcher::Waiter*> PrefillBatcher::NextBatch() {
  absl::MutexLock lock(&mu_);
  for (;;) {
    mu_.Await(absl::Condition(this, &PrefillBatcher::HasWorkOrStopping));
    if (stopping_) return {};
    const absl::Time arrival = queue_.front()->call.arrival;
    const absl::Time close = arrival < idle_since_ ? arrival : arrival + options_.window;
    mu_.AwaitWithDeadline(absl::Condition(this, &PrefillBatcher::IsFullOrStopping), close);
    if (stopping_) return {};
    std::vector<Waiter*> batch = TakeBatchLocked(absl::Now());
    if (!batch.empty()) {
      running_ = true;
      return batch;
    }
  }
}

std::vector<PrefillBatcher::Waiter*> PrefillBatcher::TakeBatchLocked(absl::Time now) {
  std::vector<Waiter*> batch;
  int64_t prompts = 0;
  int64_t longest = 0;
  for (size_t i = 0; i < queue_.size();) {
    Waiter* w = queue_[i];
    if (now >= w->call.deadline) {
      EndLocked(w, QueuedPastDeadline());
      continue;
    }
    const int64_t n = prompts + static_cast<int64_t>(w->call.prompts.size());
    const bool fits =
        batch.empty() ||
        (w->call.lease_holder == batch[0]->call.lease_holder && n <= options_.max_prompts &&
         n * std::max(longest, w->longest) <= options_.max_batch_tokens);
    if (!fits) {
      ++i;
      continue;
    }
    queue_.erase(queue_.begin() + static_cast<std::ptrdiff_t>(i));
    queued_prompts_ -= static_cast<int64_t>(w->call.prompts.size());
    w->taken = true;
    w->call.taken = now;
    prompts = n;
    longest = std::max(longest, w->longest);
    batch.push_back(w);
  }
  return batch;
}

void PrefillBatcher::EndLocked(Waiter* w, absl::Status status) {
  const auto it = std::find(queue_.begin(), queue_.end(), w);
  if (it != queue_.end()) {
    queue_.erase(it);
    queued_prompts_ -= static_cast<int64_t>(w->call.prompts.size());
  }
  w->call.outcome = std::move(status);
  w->taken = true;
  w->done = true;
}

bool PrefillBatcher::HasWorkOrStopping() const {
  return stopping_ || (!queue_.empty() && !running_);
}

bool PrefillBatcher::IsFullOrStopping() const {
  return stopping_ || queued_prompts_ >= options_.max_prompts;
}

}  // namespace nanoserve
