// A child process: started with fork/exec, its stdout and stderr appended to
// a log file, signalled and reaped by its owner; it gets SIGTERM if the
// thread that started it exits first (PR_SET_PDEATHSIG). `nanoserve serve` and the
// integration tests start the service binaries with it.
//
// Thread safety: thread-compatible (one owner).
#ifndef NANOSERVE_CLIENT_SUBPROCESS_H_
#define NANOSERVE_CLIENT_SUBPROCESS_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace nanoserve {

class Subprocess {
 public:
  // Runs argv[0] (a path) with argv; output goes to `log_path` ("" keeps
  // the parent's). The child gets the parent's environment with `env`'s
  // "NAME=VALUE" entries set over it. INVALID_ARGUMENT for an entry without
  // a name and '='; INTERNAL if fork fails; a failed exec shows as exit 127.
  static absl::StatusOr<std::unique_ptr<Subprocess>> Start(
      const std::vector<std::string>& argv, const std::string& log_path = "",
      const std::vector<std::string>& env = {});
  // Kills (SIGKILL) and reaps the child if it still runs.
  ~Subprocess();

  pid_t pid() const { return pid_; }
  bool running();
  void Signal(int signal_number);
  // Waits for the child to exit; its exit code (128 + signal if killed).
  // DEADLINE_EXCEEDED if it still runs after `timeout`.
  absl::StatusOr<int> Wait(absl::Duration timeout);
  // SIGTERM, then SIGKILL if it has not exited within `grace`.
  absl::StatusOr<int> Stop(absl::Duration grace = absl::Seconds(10));

 private:
  explicit Subprocess(pid_t pid) : pid_(pid) {}
  pid_t pid_;
  bool reaped_ = false;
  int exit_code_ = 0;
};

// Directory of the running executable (/proc/self/exe), for finding the
// service binaries next to it.
std::string ExecutableDir();

// The ports in a ServerOptions::port_file.
struct ServicePorts {
  int grpc = 0;
  int metrics = 0;  // 0: no metrics page
  int http = 0;     // the first side server's (decode's HTTP API); 0: none
};

// Reads a ServerOptions::port_file. Polls until the file is complete, the
// child exits, or `timeout` passes.
absl::StatusOr<ServicePorts> ReadPortFile(const std::string& path, Subprocess* child,
                                          absl::Duration timeout);

}  // namespace nanoserve

#endif  // NANOSERVE_CLIENT_SUBPROCESS_H_
