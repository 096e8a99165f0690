// What each caller of the KV store holds, and the bounds on it, so that one
// caller cannot take the store from the others (the anonymous
// caller took 20 000 leases in 4 s and pinned every page with 64 Puts).
//
// A caller is a key: its TLS identity, or without TLS its address (no port):
// KvStoreHandler::CallerKey. Per caller this counts
//   * leases held, and the distinct pages they pin: a lease names the page
//     ids of the path it pins, and a page pinned by several of the caller's
//     leases counts once (64 requests in flight on one prompt pin its pages
//     once, as in the pool);
//   * Put streams in flight and the page bytes they buffer,
//   * pages reserved for writing in place (Reserve) and not committed yet.
// Each has an idle deadline elsewhere: a lease not renewed within the
// store's lease TTL is reaped (ReapIdleLeases mirrors that here), a Put
// stream on which nothing arrives for the handler's put_idle_timeout is
// cancelled, a reservation not committed within the handler's
// reservation_ttl goes back to the pool.
//
// A call that would take a caller past a bound is refused with
// RESOURCE_EXHAUSTED naming the caller, what it holds, the bound and the
// flag that sets it; what it already holds is untouched. A lease is checked
// before it is taken (the caller holds fewer than max_leases leases and
// fewer than max_pinned_pages pages), so one lease may take a caller past
// max_pinned_pages by its own pages, never further. Likewise a caller's Put
// stream is refused for its bytes only while the caller's other streams
// buffer some: a caller alone may send one Put of any size the store's bound
// over all callers admits (one long prompt of a large model), never two
// past max_put_bytes.
//
// Thread safety: thread-safe.
#ifndef NANOSERVE_KV_STORE_SERVER_CALLER_QUOTAS_H_
#define NANOSERVE_KV_STORE_SERVER_CALLER_QUOTAS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/span.h"

namespace nanoserve {

// Bounds per caller; 0: none.
struct CallerQuotaOptions {
  // Leases held at once (--max_leases_per_caller).
  int64_t max_leases = 4096;
  // Pages pinned by the caller's leases (--max_pinned_pages_per_caller).
  int64_t max_pinned_pages = 0;
  // Put streams open at once (--max_puts_per_caller).
  int64_t max_puts = 32;
  // Page bytes the caller's Put streams buffer (--max_put_mb_per_caller).
  int64_t max_put_bytes = int64_t{128} << 20;
  // Pages reserved and not committed (--max_reserved_pages_per_caller).
  int64_t max_reserved_pages = 0;
};

class CallerQuotas {
 public:
  struct Usage {
    int64_t leases = 0;
    int64_t pinned_pages = 0;
    int64_t puts = 0;
    int64_t put_bytes = 0;
    int64_t reserved_pages = 0;
  };

  explicit CallerQuotas(const CallerQuotaOptions& options) : options_(options) {}

  // OK if `caller` may take one more lease; RESOURCE_EXHAUSTED otherwise.
  absl::Status CheckLease(const std::string& caller) const ABSL_LOCKS_EXCLUDED(mu_);
  // Counts lease `id` (pinning the pool's pages `pages`, taken or renewed at
  // `now`) against `caller`. An id already counted is left as it is.
  void AddLease(uint64_t id, const std::string& caller, absl::Span<const int32_t> pages,
                absl::Time now) ABSL_LOCKS_EXCLUDED(mu_);
  // Restarts lease `id`'s idle time; unknown ids are ignored.
  void RenewLease(uint64_t id, absl::Time now) ABSL_LOCKS_EXCLUDED(mu_);
  // Stops counting lease `id` (released); unknown ids are ignored.
  void EndLease(uint64_t id) ABSL_LOCKS_EXCLUDED(mu_);
  // Stops counting the leases last taken or renewed before `before` (the
  // store reaped them); returns how many.
  int64_t ReapIdleLeases(absl::Time before) ABSL_LOCKS_EXCLUDED(mu_);

  // Counts a Put stream of `bytes` buffered page bytes against `caller`, or
  // RESOURCE_EXHAUSTED (nothing counted): past max_puts streams, or past
  // max_put_bytes while the caller's other streams buffer any bytes. REQUIRES: EndPut(caller,
  // bytes) once the stream ends, when this returned OK.
  absl::Status StartPut(const std::string& caller, int64_t bytes) ABSL_LOCKS_EXCLUDED(mu_);
  void EndPut(const std::string& caller, int64_t bytes) ABSL_LOCKS_EXCLUDED(mu_);

  // Counts a reservation of `pages` pages against `caller`, or
  // RESOURCE_EXHAUSTED (nothing counted) when it would take the caller past
  // max_reserved_pages while it holds other reservations (so one reservation
  // larger than the bound may pass, alone). REQUIRES: EndReserve(caller,
  // pages) once the reservation is committed, refused or expired, when this
  // returned OK.
  absl::Status StartReserve(const std::string& caller, int64_t pages) ABSL_LOCKS_EXCLUDED(mu_);
  void EndReserve(const std::string& caller, int64_t pages) ABSL_LOCKS_EXCLUDED(mu_);

  Usage UsageOf(const std::string& caller) const ABSL_LOCKS_EXCLUDED(mu_);
  // Callers holding anything now.
  int64_t callers() const ABSL_LOCKS_EXCLUDED(mu_);
  const CallerQuotaOptions& options() const { return options_; }

 private:
  struct Lease {
    std::string caller;
    std::vector<int32_t> pages;
    absl::Time renewed;
  };
  // What one caller holds: its usage, and how many of its leases pin each
  // page (usage.pinned_pages == page_refs.size()).
  struct Holdings {
    Usage usage;
    absl::flat_hash_map<int32_t, int32_t> page_refs;
  };
  // Subtracts `lease` from its caller's usage (erasing an empty usage).
  void EndLeaseLocked(const Lease& lease) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void EraseIfEmptyLocked(const std::string& caller) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const CallerQuotaOptions options_;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, Holdings> holdings_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<uint64_t, Lease> leases_ ABSL_GUARDED_BY(mu_);
};

}  // namespace nanoserve

#endif  // NANOSERVE_KV_STORE_SERVER_CALLER_QUOTAS_H_
