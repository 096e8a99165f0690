#include "client/mps_daemon.h"

#include <stdlib.h>

#include <cstdio>
#include <filesystem>
#include <system_error>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace nanoserve {
namespace {

constexpr char kControl[] = "nvidia-cuda-mps-control";

// The control program's path on PATH, or "".
std::string FindControl() {
  const char* path = std::getenv("PATH");
  if (path == nullptr) return "";
  for (absl::string_view dir : absl::StrSplit(path, ':', absl::SkipEmpty())) {
    const std::string candidate = absl::StrCat(dir, "/", kControl);
    std::error_code error;
    if (std::filesystem::is_regular_file(candidate, error)) return candidate;
  }
  return "";
}

// Runs `control` (with `input` on its standard input when not empty);
// its exit status.
int RunControl(const std::string& control, const char* args, const char* input) {
  const std::string command = absl::StrCat("'", control, "' ", args, " >/dev/null 2>&1");
  FILE* pipe = popen(command.c_str(), input[0] != '\0' ? "w" : "r");
  if (pipe == nullptr) return -1;
  if (input[0] != '\0') std::fputs(input, pipe);
  return pclose(pipe);
}

}  // namespace

absl::StatusOr<MpsMode> ParseMpsMode(absl::string_view name) {
  if (name == "auto") return MpsMode::kAuto;
  if (name == "on") return MpsMode::kOn;
  if (name == "off") return MpsMode::kOff;
  return absl::InvalidArgumentError(absl::StrCat("--mps '", name, "' is not auto, on or off"));
}

absl::StatusOr<MpsPriority> ParseMpsPriority(absl::string_view name) {
  if (name == "normal") return MpsPriority::kNormal;
  if (name == "below_normal") return MpsPriority::kBelowNormal;
  return absl::InvalidArgumentError(
      absl::StrCat("an MPS priority of '", name, "' is not normal or below_normal"));
}

std::string MpsClientPriorityEnv(MpsPriority priority) {
  return absl::StrCat("CUDA_MPS_CLIENT_PRIORITY=", priority == MpsPriority::kNormal ? 0 : 1);
}

absl::StatusOr<std::vector<std::string>> MpsSmShareEnv(int percent) {
  if (percent < 1 || percent > 100) {
    return absl::InvalidArgumentError(
        absl::StrCat("an SM share of ", percent, "% is not within 1..100"));
  }
  if (percent == 100) return std::vector<std::string>();
  return std::vector<std::string>{absl::StrCat("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=", percent)};
}

absl::StatusOr<std::unique_ptr<MpsDaemon>> MpsDaemon::Start(const std::string& dir) {
  if (std::getenv("CUDA_MPS_PIPE_DIRECTORY") != nullptr) {
    return absl::FailedPreconditionError(
        "CUDA_MPS_PIPE_DIRECTORY is set: an MPS daemon serves this environment already");
  }
  const std::string control = FindControl();
  if (control.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(kControl, " is not on PATH"));
  }
  const std::string pipe_dir = absl::StrCat(dir, "/mps/pipe");
  const std::string log_dir = absl::StrCat(dir, "/mps/log");
  std::error_code made;
  std::filesystem::create_directories(pipe_dir, made);
  if (!made) std::filesystem::create_directories(log_dir, made);
  if (made) {
    return absl::UnavailableError(absl::StrCat("MPS: cannot make ", dir, "/mps: ", made.message()));
  }
  setenv("CUDA_MPS_PIPE_DIRECTORY", pipe_dir.c_str(), 1);
  setenv("CUDA_MPS_LOG_DIRECTORY", log_dir.c_str(), 1);
  const int started = RunControl(control, "-d", "");
  if (started != 0) {
    unsetenv("CUDA_MPS_PIPE_DIRECTORY");
    unsetenv("CUDA_MPS_LOG_DIRECTORY");
    return absl::UnavailableError(
        absl::StrCat(control, " -d exited with status ", started, " (its log: ", log_dir, ")"));
  }
  return std::unique_ptr<MpsDaemon>(new MpsDaemon(control, pipe_dir));
}

MpsDaemon::~MpsDaemon() {
  RunControl(control_, "", "quit\n");
  unsetenv("CUDA_MPS_PIPE_DIRECTORY");
  unsetenv("CUDA_MPS_LOG_DIRECTORY");
}

}  // namespace nanoserve
