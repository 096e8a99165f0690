// Paths under the test temp dir that no other test process uses. ctest runs
// every test in its own process, many at once: a file two tests share is
// rewritten under the other's mmap (SIGBUS) or read half-written.
#ifndef NANOSERVE_TESTS_TEST_UTIL_TEMP_PATH_H_
#define NANOSERVE_TESTS_TEST_UTIL_TEMP_PATH_H_

#include <unistd.h>

#include <string>

#include "gtest/gtest.h"

namespace nanoserve::testing {

// <temp dir>/nanoserve_<pid>_<name>.
inline std::string ProcessTempPath(const std::string& name) {
  return ::testing::TempDir() + "/nanoserve_" + std::to_string(::getpid()) + "_" + name;
}

}  // namespace nanoserve::testing

#endif  // NANOSERVE_TESTS_TEST_UTIL_TEMP_PATH_H_
