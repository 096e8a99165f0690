#include "kv_store/server/lease_reaper.h"

#include <algorithm>

namespace nanoserve {

absl::Duration LeaseReaper::Period(absl::Duration lease_ttl) {
  if (lease_ttl == absl::InfiniteDuration()) return absl::Hours(1);
  return std::max(absl::Milliseconds(100), lease_ttl / 4);
}

LeaseReaper::LeaseReaper(KvStoreHandler* handler, absl::Duration lease_ttl) {
  const absl::Duration period = Period(lease_ttl);
  thread_ = std::thread([this, handler, period] {
    while (!stop_.WaitForNotificationWithTimeout(period)) handler->ReapExpiredLeases();
  });
}

LeaseReaper::~LeaseReaper() {
  stop_.Notify();
  thread_.join();
}

}  // namespace nanoserve
