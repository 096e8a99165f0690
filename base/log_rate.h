// A bound on how often one kind of line is logged: at most `per_second`
// lines in each second (counted from the first line of the second); the
// lines past it are counted, and the next line logged says how many were
// not. The decode scheduler's slow turns and prefill's slow batches use one
// each, so a stall logs a few lines, not one a step.
//
// Thread safety: not thread-safe (one thread's log).
#ifndef NANOSERVE_BASE_LOG_RATE_H_
#define NANOSERVE_BASE_LOG_RATE_H_

#include <cstdint>

#include "absl/time/time.h"

namespace nanoserve {

class LogRate {
 public:
  // REQUIRES: per_second >= 1.
  explicit LogRate(int64_t per_second) : per_second_(per_second) {}

  // Whether a line may be logged at `now`. If so, `*skipped` is how many
  // lines were refused since the last one allowed (then reset to 0).
  bool Allow(absl::Time now, int64_t* skipped) {
    if (now - window_ >= absl::Seconds(1)) {
      window_ = now;
      logged_ = 0;
    }
    if (logged_ >= per_second_) {
      ++refused_;
      return false;
    }
    ++logged_;
    *skipped = refused_;
    refused_ = 0;
    return true;
  }

 private:
  const int64_t per_second_;
  absl::Time window_ = absl::InfinitePast();
  int64_t logged_ = 0;
  int64_t refused_ = 0;
};

}  // namespace nanoserve

#endif  // NANOSERVE_BASE_LOG_RATE_H_
