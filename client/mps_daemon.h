// NVIDIA's Multi-Process Service for a stack whose services share one GPU.
// Without it the card runs one process's kernels at a time, so prefill's
// passes and decode's steps wait for each other (on an H100, the services
// over HTTP made 73% of decode alone's throughput without MPS and 101% with
// it: docs/services.md). `nanoserve serve --mps auto` starts a daemon of its
// own (its pipe and log directories under the stack's work directory, so it
// touches no other MPS on the host) and the services it starts inherit the
// environment that points at it.
//
// Thread-compatible: Start and the destructor change this process's
// environment; call them before and after the services' lives.
#ifndef NANOSERVE_CLIENT_MPS_DAEMON_H_
#define NANOSERVE_CLIENT_MPS_DAEMON_H_

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace nanoserve {

class MpsDaemon {
 public:
  // Runs `nvidia-cuda-mps-control -d` (found on PATH) with
  // CUDA_MPS_PIPE_DIRECTORY = dir/pipe and CUDA_MPS_LOG_DIRECTORY = dir/log,
  // and sets both in this process's environment. FAILED_PRECONDITION when
  // the control program is not on PATH or an MPS is set already
  // (CUDA_MPS_PIPE_DIRECTORY given); UNAVAILABLE when it does not start.
  static absl::StatusOr<std::unique_ptr<MpsDaemon>> Start(const std::string& dir);
  // Tells the daemon to quit (after the services have stopped) and takes
  // the two variables back out of the environment.
  ~MpsDaemon();
  MpsDaemon(const MpsDaemon&) = delete;
  MpsDaemon& operator=(const MpsDaemon&) = delete;

  const std::string& pipe_dir() const { return pipe_dir_; }

 private:
  MpsDaemon(std::string control, std::string pipe_dir)
      : control_(std::move(control)), pipe_dir_(std::move(pipe_dir)) {}
  std::string control_;  // the control program that started it
  std::string pipe_dir_;
};

// `--mps`: auto (a daemon of its own when the stack runs on a CUDA device
// and the control program is there; else none, said in the log), on (the
// same, or an error) or off.
enum class MpsMode { kAuto, kOn, kOff };
absl::StatusOr<MpsMode> ParseMpsMode(absl::string_view name);

// `--mps_prefill_priority`: the MPS client priority of prefill's kernels
// against decode's (CUDA_MPS_CLIENT_PRIORITY, a hint to the MPS server's
// scheduler): normal (the same as decode's) or below_normal (decode's steps
// first, so that a burst of prompts slows the streams in flight less).
enum class MpsPriority { kNormal, kBelowNormal };
absl::StatusOr<MpsPriority> ParseMpsPriority(absl::string_view name);
// The environment entry that gives a client that priority.
std::string MpsClientPriorityEnv(MpsPriority priority);
// `--mps_prefill_sm_percent`: the share of the GPU's SMs prefill's kernels
// may take under MPS (CUDA_MPS_ACTIVE_THREAD_PERCENTAGE), so that decode's
// steps find SMs free while prefill's passes run; 100: all of them (the
// variable is not set). INVALID_ARGUMENT outside 1..100; else the
// environment entries to set (none for 100).
absl::StatusOr<std::vector<std::string>> MpsSmShareEnv(int percent);

}  // namespace nanoserve

#endif  // NANOSERVE_CLIENT_MPS_DAEMON_H_
