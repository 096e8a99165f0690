// A child process's environment: the parent's, with the entries the caller
// names set over it (how serve gives prefill a lower MPS client priority
// than decode), and a malformed entry refused before anything starts.
#include "client/subprocess.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "tests/test_util/temp_path.h"

namespace nanoserve {
namespace subprocess_test {

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

TEST(SubprocessTest, TheChildGetsTheParentsEnvironmentWithTheGivenEntriesOverIt) {
  const std::string log = testing::ProcessTempPath("subprocess-env.log");
  std::filesystem::remove(log);
  setenv("NANOSERVE_SUBPROCESS_KEPT", "parent", 1);
  setenv("NANOSERVE_SUBPROCESS_OVER", "parent", 1);
  absl::StatusOr<std::unique_ptr<Subprocess>> child =
      Subprocess::Start({"/bin/sh", "-c",
                         "echo \"kept=$NANOSERVE_SUBPROCESS_KEPT over=$NANOSERVE_SUBPROCESS_OVER "
                         "new=$NANOSERVE_SUBPROCESS_NEW\""},
                        log, {"NANOSERVE_SUBPROCESS_OVER=child", "NANOSERVE_SUBPROCESS_NEW=a=b"});
  unsetenv("NANOSERVE_SUBPROCESS_KEPT");
  unsetenv("NANOSERVE_SUBPROCESS_OVER");
  ASSERT_TRUE(child.ok()) << child.status();
  absl::StatusOr<int> code = (*child)->Wait(absl::Seconds(30));
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 0);
  EXPECT_EQ(ReadAll(log), "kept=parent over=child new=a=b\n");
  std::filesystem::remove(log);
}

TEST(SubprocessTest, AnEnvironmentEntryWithoutANameIsRefusedBeforeStarting) {
  for (const char* bad : {"NO_EQUALS_SIGN", "=value"}) {
    absl::StatusOr<std::unique_ptr<Subprocess>> child = Subprocess::Start({"/bin/true"}, "", {bad});
    EXPECT_EQ(child.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

}  // namespace subprocess_test
}  // namespace nanoserve
