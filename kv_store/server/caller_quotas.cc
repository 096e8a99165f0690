#include "kv_store/server/caller_quotas.h"

#include "absl/strings/str_cat.h"
#include "base/caller_shares.h"

namespace nanoserve {
namespace {

// How messages name a caller, as decode's fair shares do.
std::string Who(const std::string& caller) { return DescribeCaller(caller); }

}  // namespace

absl::Status CallerQuotas::CheckLease(const std::string& caller) const {
  absl::MutexLock lock(&mu_);
  auto it = holdings_.find(caller);
  if (it == holdings_.end()) return absl::OkStatus();
  const Usage& u = it->second.usage;
  if (options_.max_leases > 0 && u.leases >= options_.max_leases) {
    return absl::ResourceExhaustedError(
        absl::StrCat(Who(caller), " holds ", u.leases,
                     " leases, the store's bound per caller "
                     "(--max_leases_per_caller): release some first"));
  }
  if (options_.max_pinned_pages > 0 && u.pinned_pages >= options_.max_pinned_pages) {
    return absl::ResourceExhaustedError(absl::StrCat(
        Who(caller), " pins ", u.pinned_pages,
        " pages with its leases, the store's bound per caller is ", options_.max_pinned_pages,
        " (--max_pinned_pages_per_caller): release some leases first"));
  }
  return absl::OkStatus();
}

void CallerQuotas::AddLease(uint64_t id, const std::string& caller, absl::Span<const int32_t> pages,
                            absl::Time now) {
  absl::MutexLock lock(&mu_);
  auto [lease, added] =
      leases_.try_emplace(id, Lease{caller, std::vector<int32_t>(pages.begin(), pages.end()), now});
  if (!added) return;
  Holdings& h = holdings_[caller];
  ++h.usage.leases;
  for (int32_t page : lease->second.pages) {
    if (h.page_refs[page]++ == 0) ++h.usage.pinned_pages;
  }
}

void CallerQuotas::RenewLease(uint64_t id, absl::Time now) {
  absl::MutexLock lock(&mu_);
  auto it = leases_.find(id);
  if (it != leases_.end()) it->second.renewed = now;
}

void CallerQuotas::EndLease(uint64_t id) {
  absl::MutexLock lock(&mu_);
  auto it = leases_.find(id);
  if (it == leases_.end()) return;
  EndLeaseLocked(it->second);
  leases_.erase(it);
}

int64_t CallerQuotas::ReapIdleLeases(absl::Time before) {
  absl::MutexLock lock(&mu_);
  int64_t reaped = 0;
  for (auto it = leases_.begin(); it != leases_.end();) {
    auto here = it++;
    if (here->second.renewed >= before) continue;
    EndLeaseLocked(here->second);
    leases_.erase(here);
    ++reaped;
  }
  return reaped;
}

void CallerQuotas::EndLeaseLocked(const Lease& lease) {
  Holdings& h = holdings_[lease.caller];
  --h.usage.leases;
  for (int32_t page : lease.pages) {
    auto ref = h.page_refs.find(page);
    if (ref == h.page_refs.end() || --ref->second > 0) continue;
    h.page_refs.erase(ref);
    --h.usage.pinned_pages;
  }
  EraseIfEmptyLocked(lease.caller);
}

absl::Status CallerQuotas::StartPut(const std::string& caller, int64_t bytes) {
  absl::MutexLock lock(&mu_);
  Usage& u = holdings_[caller].usage;
  absl::Status refused;
  if (options_.max_puts > 0 && u.puts >= options_.max_puts) {
    refused =
        absl::ResourceExhaustedError(absl::StrCat("Put: ", Who(caller), " has ", u.puts,
                                                  " Put streams open, the store's "
                                                  "bound per caller (--max_puts_per_caller)"));
  } else if (options_.max_put_bytes > 0 && u.put_bytes > 0 &&
             u.put_bytes + bytes > options_.max_put_bytes) {
    refused = absl::ResourceExhaustedError(
        absl::StrCat("Put: ", bytes, " bytes would take ", Who(caller),
                     "'s Put streams in flight past ", options_.max_put_bytes,
                     " bytes, the store's bound per caller (--max_put_mb_per_caller; "
                     "it holds ",
                     u.put_bytes, ")"));
  }
  if (!refused.ok()) {
    EraseIfEmptyLocked(caller);
    return refused;
  }
  ++u.puts;
  u.put_bytes += bytes;
  return absl::OkStatus();
}

void CallerQuotas::EndPut(const std::string& caller, int64_t bytes) {
  absl::MutexLock lock(&mu_);
  Usage& u = holdings_[caller].usage;
  --u.puts;
  u.put_bytes -= bytes;
  EraseIfEmptyLocked(caller);
}

absl::Status CallerQuotas::StartReserve(const std::string& caller, int64_t pages) {
  absl::MutexLock lock(&mu_);
  Usage& u = holdings_[caller].usage;
  if (options_.max_reserved_pages > 0 && u.reserved_pages > 0 &&
      u.reserved_pages + pages > options_.max_reserved_pages) {
    const int64_t held = u.reserved_pages;
    EraseIfEmptyLocked(caller);
    return absl::ResourceExhaustedError(absl::StrCat(
        "Reserve: ", pages, " pages would take ", Who(caller), "'s uncommitted reservations past ",
        options_.max_reserved_pages,
        " pages, the store's bound per caller (--max_reserved_pages_per_caller; it holds ", held,
        "): commit or let them expire first"));
  }
  u.reserved_pages += pages;
  return absl::OkStatus();
}

void CallerQuotas::EndReserve(const std::string& caller, int64_t pages) {
  absl::MutexLock lock(&mu_);
  holdings_[caller].usage.reserved_pages -= pages;
  EraseIfEmptyLocked(caller);
}

void CallerQuotas::EraseIfEmptyLocked(const std::string& caller) {
  auto it = holdings_.find(caller);
  if (it == holdings_.end()) return;
  const Usage& u = it->second.usage;
  if (u.leases == 0 && u.pinned_pages == 0 && u.puts == 0 && u.put_bytes == 0 &&
      u.reserved_pages == 0) {
    holdings_.erase(it);
  }
}

CallerQuotas::Usage CallerQuotas::UsageOf(const std::string& caller) const {
  absl::MutexLock lock(&mu_);
  auto it = holdings_.find(caller);
  return it == holdings_.end() ? Usage{} : it->second.usage;
}

int64_t CallerQuotas::callers() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int64_t>(holdings_.size());
}

}  // namespace nanoserve
