#include "base/flag_range.h"

#include <vector>

#include "absl/strings/str_cat.h"

namespace nanoserve {
namespace {

struct FlagRange {
  const absl::Flag<int64_t>* flag;
  const char* name;
  int64_t lo;
  int64_t hi;
};

std::vector<FlagRange>& Registry() {
  static auto* ranges = new std::vector<FlagRange>();
  return *ranges;
}

}  // namespace

bool RegisterFlagRange(const absl::Flag<int64_t>* flag, const char* name, int64_t lo, int64_t hi) {
  Registry().push_back({flag, name, lo, hi});
  return true;
}

absl::Status CheckFlagRanges() {
  for (const FlagRange& range : Registry()) {
    const int64_t value = absl::GetFlag(*range.flag);
    if (value < range.lo || value > range.hi) {
      return absl::InvalidArgumentError(absl::StrCat("--", range.name, " must be in [", range.lo,
                                                     ", ", range.hi, "], got ", value));
    }
  }
  return absl::OkStatus();
}

}  // namespace nanoserve
