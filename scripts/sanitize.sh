#!/usr/bin/env bash
# Builds the unit and integration tests with AddressSanitizer and
# UndefinedBehaviorSanitizer (GCC, -DNANOSERVE_SANITIZE=address,undefined) into
# build-asan/ and runs them. Only nanoserve's own code is instrumented; LibTorch,
# gRPC and the rest are Debian's prebuilt libraries. Any report fails the run.
# Arguments go to ctest (e.g. -R Tokenizer). Run scripts/setup.sh first;
# docs/testing.md says what it checks and how long it takes.
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS=${JOBS:-$(nproc)}
BUILD=${BUILD:-build-asan}
supp="$PWD/scripts/sanitizers"

# Read by the test binaries and by the service binaries the integration tests
# start (they inherit the environment); also at build time, when
# gtest_discover_tests runs each test binary to list its tests. ASan and LSan
# reports go to files under $BUILD/sanitizer-logs/ (one per process that had
# one), so that one from a service child, whose output goes to a log of its
# own, is seen too. UBSan's go to stderr (GCC's runtime ignores its log_path
# beside ASan); halt_on_error makes the process exit 1, which fails the test
# (the integration tests expect each service to exit 0).
logs="$(realpath -m "$BUILD")/sanitizer-logs"
rm -rf "$logs" && mkdir -p "$logs"
export ASAN_OPTIONS="halt_on_error=1:detect_leaks=1:detect_stack_use_after_return=1:check_initialization_order=1:strict_init_order=1:log_path=$logs/asan"
export LSAN_OPTIONS="suppressions=$supp/lsan.supp:print_suppressions=0"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:suppressions=$supp/ubsan.supp"

launcher=()
command -v ccache >/dev/null 2>&1 && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
# -O1 -g1: line tables for readable reports, at little cost in build time.
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1 -DNDEBUG" \
  -DNANOSERVE_SANITIZE=address,undefined "${launcher[@]}" >/dev/null
cmake --build "$BUILD" -j"$JOBS"
status=0
ctest --test-dir "$BUILD" --output-on-failure -j"$JOBS" "$@" || status=$?
if compgen -G "$logs/*" >/dev/null; then
  for f in "$logs"/*; do echo "== $f"; cat "$f"; done
  echo "sanitize: sanitizer reports above (in $logs)" >&2
  status=1
fi
exit $status
