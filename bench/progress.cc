#include "bench/progress.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace nanoserve {

std::string FormatDuration(double seconds) {
  const int64_t s = static_cast<int64_t>(std::llround(std::max(0.0, seconds)));
  if (s < 60) return absl::StrFormat("%ds", s);
  if (s < 3600) return absl::StrFormat("%dm%02ds", s / 60, s % 60);
  return absl::StrFormat("%dh%02dm", s / 3600, (s % 3600) / 60);
}

std::string FormatProgress(int64_t done, int64_t total, double done_cost, double total_cost,
                           double elapsed_s, int width, const std::string& label) {
  const double fraction = total_cost > 0 ? std::clamp(done_cost / total_cost, 0.0, 1.0)
                                         : (total > 0 ? static_cast<double>(done) / total : 1.0);
  const int filled = static_cast<int>(std::floor(fraction * width));
  std::string bar = "[" + std::string(filled, '#') + std::string(width - filled, '.') + "]";
  std::string left = "?";
  if (done >= total) {
    left = "0s";
  } else if (done_cost > 0) {
    left = "~" + FormatDuration(elapsed_s * (total_cost - done_cost) / done_cost);
  }
  std::string text = absl::StrFormat(
      "%s %*d/%d %3d%%  elapsed %s  left %s", bar, static_cast<int>(absl::StrCat(total).size()),
      done, total, static_cast<int>(std::floor(fraction * 100)), FormatDuration(elapsed_s), left);
  if (!label.empty()) text += "  " + label;
  return text;
}

ProgressBar::ProgressBar(std::FILE* out, bool redraw, int64_t total, double total_cost)
    : out_(out),
      redraw_(redraw),
      total_(total),
      total_cost_(total_cost),
      start_(std::chrono::steady_clock::now()) {}

double ProgressBar::ElapsedSeconds() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

void ProgressBar::Start(const std::string& label) {
  if (!redraw_) return;
  std::fprintf(
      out_, "\r\033[K%s",
      FormatProgress(done_, total_, done_cost_, total_cost_, ElapsedSeconds(), 30, label).c_str());
  std::fflush(out_);
}

void ProgressBar::Finish(double cost, const std::string& result) {
  ++done_;
  done_cost_ += cost;
  if (redraw_) {
    // The result stays above the bar, which is redrawn below it.
    std::fprintf(
        out_, "\r\033[K%s\n%s", result.c_str(),
        FormatProgress(done_, total_, done_cost_, total_cost_, ElapsedSeconds(), 30, "").c_str());
  } else {
    std::fprintf(
        out_, "%s\n  %s\n",
        FormatProgress(done_, total_, done_cost_, total_cost_, ElapsedSeconds(), 20, "").c_str(),
        result.c_str());
  }
  std::fflush(out_);
}

void ProgressBar::Close() {
  if (redraw_) std::fprintf(out_, "\n");
  std::fflush(out_);
}

}  // namespace nanoserve
