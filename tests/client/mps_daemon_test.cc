// The MPS daemon `nanoserve serve` starts for a stack on one GPU: found on
// PATH, started with its directories under the stack's, its environment
// passed on to the services and taken back after, told to quit at the end;
// and refused (so serve goes on without it) when there is no control
// program or an MPS is set up already. The control program here is a
// script standing in for NVIDIA's that records how it was called.
#include "client/mps_daemon.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "tests/test_util/temp_path.h"

namespace nanoserve {
namespace mps_daemon_test {

class MpsDaemonTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = testing::ProcessTempPath("mps");
    std::filesystem::remove_all(root_);
    std::filesystem::create_directories(root_ + "/bin");
    const char* path = std::getenv("PATH");
    saved_path_ = path != nullptr ? path : "";
    setenv("PATH", (root_ + "/bin").c_str(), 1);
    unsetenv("CUDA_MPS_PIPE_DIRECTORY");
    unsetenv("CUDA_MPS_LOG_DIRECTORY");
  }
  void TearDown() override {
    setenv("PATH", saved_path_.c_str(), 1);
    std::filesystem::remove_all(root_);
  }

  // A control program that appends its arguments, the pipe directory it
  // was given and its standard input's first line (for "quit") to
  // calls.log, and exits with `code`. Shell builtins only: PATH holds just
  // its own directory.
  void InstallControl(int code) {
    const std::string script = root_ + "/bin/nanoserve-fake-mps";
    std::ofstream(script) << "#!/bin/sh\n"
                          << "input=''\n"
                          << "[ \"$1\" = -d ] || read -r input\n"
                          << "echo \"args=$* pipe=$CUDA_MPS_PIPE_DIRECTORY input=$input\" >> '"
                          << root_ << "/calls.log'\n"
                          << "exit " << code << "\n";
    ::chmod(script.c_str(), 0755);
    std::filesystem::create_symlink(script, root_ + "/bin/nvidia-cuda-mps-control");
  }
  std::string Calls() {
    std::ifstream in(root_ + "/calls.log");
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  }

  std::string root_;
  std::string saved_path_;
};

TEST_F(MpsDaemonTest, StartsUnderTheWorkDirPassesItsEnvironmentOnAndQuits) {
  InstallControl(0);
  const std::string pipe = root_ + "/work/mps/pipe";
  {
    absl::StatusOr<std::unique_ptr<MpsDaemon>> mps = MpsDaemon::Start(root_ + "/work");
    ASSERT_TRUE(mps.ok()) << mps.status();
    EXPECT_EQ((*mps)->pipe_dir(), pipe);
    EXPECT_TRUE(std::filesystem::is_directory(pipe));
    EXPECT_TRUE(std::filesystem::is_directory(root_ + "/work/mps/log"));
    ASSERT_NE(std::getenv("CUDA_MPS_PIPE_DIRECTORY"), nullptr);
    EXPECT_EQ(std::string(std::getenv("CUDA_MPS_PIPE_DIRECTORY")), pipe);
    EXPECT_EQ(Calls(), "args=-d pipe=" + pipe + " input=\n");
    // A second daemon for the same environment is refused.
    EXPECT_EQ(MpsDaemon::Start(root_ + "/other").status().code(),
              absl::StatusCode::kFailedPrecondition);
  }
  EXPECT_EQ(Calls(), "args=-d pipe=" + pipe + " input=\nargs= pipe=" + pipe + " input=quit\n");
  EXPECT_EQ(std::getenv("CUDA_MPS_PIPE_DIRECTORY"), nullptr);
  EXPECT_EQ(std::getenv("CUDA_MPS_LOG_DIRECTORY"), nullptr);
}

TEST_F(MpsDaemonTest, NoControlProgramOrOneThatFailsIsRefusedAndLeavesNothingSet) {
  absl::StatusOr<std::unique_ptr<MpsDaemon>> none = MpsDaemon::Start(root_ + "/work");
  EXPECT_EQ(none.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(none.status().message().find("nvidia-cuda-mps-control is not on PATH"),
            std::string::npos);
  InstallControl(3);
  absl::StatusOr<std::unique_ptr<MpsDaemon>> failed = MpsDaemon::Start(root_ + "/work");
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(std::getenv("CUDA_MPS_PIPE_DIRECTORY"), nullptr);
  EXPECT_EQ(std::getenv("CUDA_MPS_LOG_DIRECTORY"), nullptr);
}

TEST(ParseMpsMode, AutoOnOff) {
  EXPECT_EQ(ParseMpsMode("auto").value(), MpsMode::kAuto);
  EXPECT_EQ(ParseMpsMode("on").value(), MpsMode::kOn);
  EXPECT_EQ(ParseMpsMode("off").value(), MpsMode::kOff);
  EXPECT_EQ(ParseMpsMode("yes").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ParseMpsPriority, NormalOrBelowNormalAndTheirEnvironmentEntries) {
  EXPECT_EQ(MpsClientPriorityEnv(ParseMpsPriority("normal").value()), "CUDA_MPS_CLIENT_PRIORITY=0");
  EXPECT_EQ(MpsClientPriorityEnv(ParseMpsPriority("below_normal").value()),
            "CUDA_MPS_CLIENT_PRIORITY=1");
  EXPECT_EQ(ParseMpsPriority("high").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(MpsSmShareEnv, APercentageWithinOneToAHundred) {
  EXPECT_EQ(MpsSmShareEnv(50).value(),
            std::vector<std::string>{"CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=50"});
  EXPECT_TRUE(MpsSmShareEnv(100).value().empty());  // all: nothing set
  EXPECT_EQ(MpsSmShareEnv(0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MpsSmShareEnv(101).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace mps_daemon_test
}  // namespace nanoserve
