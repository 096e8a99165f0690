// Integer flags with a range, checked once the command line is parsed, so a
// service refuses a bad value with a clear message instead of crashing,
// hanging or wrapping around later (--max_batch 0, --workers 0,
// --max_message_mb 4096, ...):
//
//   NANOSERVE_FLAG_IN_RANGE(max_batch, 16, 1, 4096, "sequences decoded together");
//
// defines the int64_t flag --max_batch (default 16) and registers [1, 4096]
// as its range; CheckFlagRanges() (called by InitService after parsing)
// fails naming the first flag outside its range. The help text states the
// range.
//
// Thread safety: registration runs during static initialization; the check
// reads the registry only.
#ifndef NANOSERVE_BASE_FLAG_RANGE_H_
#define NANOSERVE_BASE_FLAG_RANGE_H_

#include <cstdint>

#include "absl/flags/flag.h"
#include "absl/status/status.h"

#define NANOSERVE_FLAG_IN_RANGE(name, default_value, lo, hi, help)       \
  ABSL_FLAG(int64_t, name, default_value, help " (" #lo " to " #hi ")"); \
  [[maybe_unused]] static const bool nanoserve_flag_range_##name =       \
      ::nanoserve::RegisterFlagRange(&FLAGS_##name, #name, lo, hi)

namespace nanoserve {

// Adds `flag` with its range [lo, hi] to the registry. Returns true (for the
// macro's static initializer).
bool RegisterFlagRange(const absl::Flag<int64_t>* flag, const char* name, int64_t lo, int64_t hi);

// INVALID_ARGUMENT naming the first registered flag whose value is outside
// its range.
absl::Status CheckFlagRanges();

}  // namespace nanoserve

#endif  // NANOSERVE_BASE_FLAG_RANGE_H_
