// Releases the leases of holders that died: a thread that calls
// KvStoreHandler::ReapExpiredLeases a few times per lease TTL, from
// construction until destruction.
//
// Thread safety: construct and destroy on one thread; the handler it calls
// is thread-safe.
#ifndef NANOSERVE_KV_STORE_SERVER_LEASE_REAPER_H_
#define NANOSERVE_KV_STORE_SERVER_LEASE_REAPER_H_

#include <thread>

#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "kv_store/server/kv_store_handler.h"

namespace nanoserve {

class LeaseReaper {
 public:
  // Starts reaping `handler` (not owned; it must outlive this) every quarter
  // of `lease_ttl`, at most every 100 ms; with an infinite TTL, hourly.
  LeaseReaper(KvStoreHandler* handler, absl::Duration lease_ttl);
  // Stops the thread and joins it.
  ~LeaseReaper();
  LeaseReaper(const LeaseReaper&) = delete;
  LeaseReaper& operator=(const LeaseReaper&) = delete;

  // How often a reaper of leases of `lease_ttl` reaps.
  static absl::Duration Period(absl::Duration lease_ttl);

 private:
  absl::Notification stop_;
  std::thread thread_;
};

}  // namespace nanoserve

#endif  // NANOSERVE_KV_STORE_SERVER_LEASE_REAPER_H_
