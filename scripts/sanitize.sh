#!/usr/bin/env bash
# Builds the unit and integration tests with AddressSanitizer and
# UndefinedBehaviorSanitizer (GCC, -DNANOSERVE_SANITIZE=address,undefined) into
# build-asan/ and runs them. Only nanoserve's own code is instrumented; LibTorch,
# gRPC and the rest are Debian's prebuilt libraries. Any report fails the run.
# Run scripts/setup.sh first. docs/testing.md says what it finds and how long it takes.
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS=${JOBS:-$(nproc)}
BUILD=${BUILD:-build-asan}
supp="$PWD/scripts/sanitizers"

# Read by the test binaries and by the service binaries the integration tests
# start (they inherit the environment); also at build time, when
# gtest_discover_tests runs each test binary to list its tests.
export ASAN_OPTIONS="halt_on_error=1:abort_on_error=0:detect_stack_use_after_return=1:check_initialization_order=1:strict_init_order=1:detect_leaks=1"
export LSAN_OPTIONS="suppressions=$supp/lsan.supp:print_suppressions=0"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:suppressions=$supp/ubsan.supp"

launcher=()
command -v ccache >/dev/null 2>&1 && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
# -O1 -g1: line tables for readable reports, at little cost in build time.
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1 -DNDEBUG" \
  -DNANOSERVE_SANITIZE=address,undefined "${launcher[@]}" >/dev/null
cmake --build "$BUILD" -j"$JOBS"
ctest --test-dir "$BUILD" --output-on-failure -j"$JOBS" "$@"
