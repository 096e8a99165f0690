#include "decode_service/stop_matcher.h"

#include <algorithm>

namespace nanoserve {

std::string StopMatcher::Push(absl::string_view piece) {
  if (stopped_) return "";
  if (stops_.empty()) return std::string(piece);
  pending_.append(piece.data(), piece.size());
  size_t first = std::string::npos;
  for (const std::string& stop : stops_) first = std::min(first, pending_.find(stop));
  if (first != std::string::npos) {
    std::string out = pending_.substr(0, first);
    pending_.clear();
    stopped_ = true;
    return out;
  }
  // Hold back the longest end of pending_ that begins some stop string.
  size_t hold = 0;
  for (const std::string& stop : stops_) {
    for (size_t k = std::min(stop.size() - 1, pending_.size()); k > hold; --k) {
      if (absl::string_view(pending_).substr(pending_.size() - k) ==
          absl::string_view(stop).substr(0, k)) {
        hold = k;
        break;
      }
    }
  }
  std::string out = pending_.substr(0, pending_.size() - hold);
  pending_.erase(0, pending_.size() - hold);
  return out;
}

std::string StopMatcher::Flush() {
  std::string out;
  out.swap(pending_);
  return out;
}

}  // namespace nanoserve
