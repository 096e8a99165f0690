// Stop sequences over text that arrives in pieces: finds the first place
// where any of a few stop strings occurs, and holds back the text that might
// be the start of one until the next pieces say whether it is. The text
// before the stop string is the output; the stop string and what follows
// are dropped (OpenAI's `stop`).
//
// Invariant: the held-back text is a proper prefix of some stop string, and
// no stop string occurs in what was returned plus what is held back.
//
// Thread safety: thread-compatible.
#ifndef NANOSERVE_DECODE_SERVICE_STOP_MATCHER_H_
#define NANOSERVE_DECODE_SERVICE_STOP_MATCHER_H_

#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace nanoserve {

class StopMatcher {
 public:
  // No stop strings: Push returns each piece as it is. REQUIRES: none empty.
  explicit StopMatcher(std::vector<std::string> stops) : stops_(std::move(stops)) {}

  // Appends `piece` and returns the text now known to come before any stop
  // string (possibly empty). Once a stop string is found, stopped() is true
  // and later pieces return "".
  std::string Push(absl::string_view piece);

  // The held-back text, at the end of the output (no stop string follows);
  // "" once stopped.
  std::string Flush();

  bool stopped() const { return stopped_; }

 private:
  const std::vector<std::string> stops_;
  std::string pending_;  // a proper prefix of a stop string
  bool stopped_ = false;
};

}  // namespace nanoserve

#endif  // NANOSERVE_DECODE_SERVICE_STOP_MATCHER_H_
