// What the fuzz targets share: FUZZ_CHECK, an assertion that stays on in
// every build and makes libFuzzer record the input as a crash.
#ifndef NANOSERVE_TESTS_FUZZ_FUZZ_CHECK_H_
#define NANOSERVE_TESTS_FUZZ_FUZZ_CHECK_H_

#include <cstdio>
#include <cstdlib>

// Aborts with the condition, file and line unless `cond` holds.
#define FUZZ_CHECK(cond)                                                                 \
  do {                                                                                   \
    if (!(cond)) {                                                                       \
      std::fprintf(stderr, "%s:%d: FUZZ_CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                      \
    }                                                                                    \
  } while (0)

#endif  // NANOSERVE_TESTS_FUZZ_FUZZ_CHECK_H_
