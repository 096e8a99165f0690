#include "client/subprocess.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace nanoserve {

namespace {

// The parent's environment with `env`'s entries set over it, built before
// fork (the child may only call async-signal-safe functions).
absl::StatusOr<std::vector<std::string>> ChildEnvironment(const std::vector<std::string>& env) {
  std::vector<std::string> out;
  auto name_of = [](absl::string_view entry) { return entry.substr(0, entry.find('=')); };
  for (const std::string& e : env) {
    const size_t eq = e.find('=');
    if (eq == std::string::npos || eq == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("Subprocess: environment entry '", e, "' is not NAME=VALUE"));
    }
  }
  for (char** p = environ; *p != nullptr; ++p) {
    const absl::string_view entry(*p);
    bool overridden = false;
    for (const std::string& e : env) overridden |= name_of(e) == name_of(entry);
    if (!overridden) out.emplace_back(entry);
  }
  out.insert(out.end(), env.begin(), env.end());
  return out;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Subprocess>> Subprocess::Start(const std::vector<std::string>& argv,
                                                              const std::string& log_path,
                                                              const std::vector<std::string>& env) {
  if (argv.empty()) return absl::InvalidArgumentError("Subprocess: empty argv");
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  absl::StatusOr<std::vector<std::string>> environment = ChildEnvironment(env);
  if (!environment.ok()) return environment.status();
  std::vector<char*> envp;
  for (const std::string& e : *environment) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  const pid_t pid = fork();
  if (pid < 0) return absl::InternalError(absl::StrCat("fork: errno ", errno));
  if (pid == 0) {
    // The child: default signal mask and handlers, output to the log.
    sigset_t all;
    sigemptyset(&all);
    pthread_sigmask(SIG_SETMASK, &all, nullptr);
    // A parent that dies without stopping its services takes them along.
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (!log_path.empty()) {
      const int fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      if (fd >= 0) {
        dup2(fd, 1);
        dup2(fd, 2);
        close(fd);
      }
    }
    execve(args[0], args.data(), envp.data());
    _exit(127);
  }
  return std::unique_ptr<Subprocess>(new Subprocess(pid));
}

Subprocess::~Subprocess() {
  if (!reaped_) {
    kill(pid_, SIGKILL);
    int status = 0;
    waitpid(pid_, &status, 0);
  }
}

bool Subprocess::running() {
  if (reaped_) return false;
  int status = 0;
  if (waitpid(pid_, &status, WNOHANG) == pid_) {
    reaped_ = true;
    exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return false;
  }
  return true;
}

void Subprocess::Signal(int signal_number) {
  if (!reaped_) kill(pid_, signal_number);
}

absl::StatusOr<int> Subprocess::Wait(absl::Duration timeout) {
  const absl::Time end = absl::Now() + timeout;
  while (running()) {
    if (absl::Now() >= end) {
      return absl::DeadlineExceededError(absl::StrCat("process ", pid_, " still running"));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return exit_code_;
}

absl::StatusOr<int> Subprocess::Stop(absl::Duration grace) {
  Signal(SIGTERM);
  auto code = Wait(grace);
  if (code.ok()) return code;
  Signal(SIGKILL);
  return Wait(absl::Seconds(10));
}

std::string ExecutableDir() {
  char buf[PATH_MAX];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return ".";
  std::string path(buf, n);
  return path.substr(0, path.rfind('/'));
}

absl::StatusOr<ServicePorts> ReadPortFile(const std::string& path, Subprocess* child,
                                          absl::Duration timeout) {
  const absl::Time end = absl::Now() + timeout;
  while (absl::Now() < end) {
    std::ifstream in(path);
    ServicePorts ports;
    if (in >> ports.grpc >> ports.metrics && ports.grpc > 0) {
      if (!(in >> ports.http)) ports.http = 0;
      return ports;
    }
    if (child != nullptr && !child->running()) {
      return absl::UnavailableError(absl::StrCat("process exited before writing ", path));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return absl::DeadlineExceededError(absl::StrCat("no ports in ", path));
}

}  // namespace nanoserve
