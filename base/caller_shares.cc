#include "base/caller_shares.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace nanoserve {

std::string DescribeCaller(const std::string& caller) {
  return caller.empty() ? std::string("an anonymous caller")
                        : absl::StrCat("caller '", caller, "'");
}

absl::Status CallerShares::Take(const std::string& caller, int64_t amount) {
  absl::MutexLock lock(&mu_);
  auto it = held_.find(caller);
  const int64_t held = it == held_.end() ? 0 : it->second;
  if (held > 0 && held + amount > options_.bound_per_caller) {
    ++refused_;
    return absl::ResourceExhaustedError(absl::StrCat(
        DescribeCaller(caller), " has ", held, " ", options_.what, "; ", amount,
        " more would pass ", options_.owner, "'s bound per caller, ", options_.bound_per_caller,
        " (", options_.flag, "): others are still served; try again when some of yours end"));
  }
  if (amount > 0) held_[caller] = held + amount;
  return absl::OkStatus();
}

void CallerShares::Give(const std::string& caller, int64_t amount) {
  if (amount <= 0) return;
  absl::MutexLock lock(&mu_);
  auto it = held_.find(caller);
  if (it == held_.end()) return;
  it->second -= amount;
  if (it->second <= 0) held_.erase(it);
}

int64_t CallerShares::HeldBy(const std::string& caller) const {
  absl::MutexLock lock(&mu_);
  auto it = held_.find(caller);
  return it == held_.end() ? 0 : it->second;
}

int64_t CallerShares::callers() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int64_t>(held_.size());
}

int64_t CallerShares::largest() const {
  absl::MutexLock lock(&mu_);
  int64_t most = 0;
  for (const auto& [caller, held] : held_) most = std::max(most, held);
  return most;
}

int64_t CallerShares::refused() const {
  absl::MutexLock lock(&mu_);
  return refused_;
}

}  // namespace nanoserve
