#!/usr/bin/env bash
# Builds the libFuzzer targets of tests/fuzz (clang, ASan + UBSan) into
# build-fuzz/ and runs each on its seed corpus for the given seconds; fails on
# the first crash, sanitizer report, leak, timeout or out-of-memory input.
#   scripts/fuzz.sh            # smoke run, 20 s per target (CI)
#   scripts/fuzz.sh 600        # a longer run
#   FUZZ_TARGETS="config_fuzzer" scripts/fuzz.sh 60
# Inputs that reach new code go to build-fuzz/corpus/<target>/ (kept between
# runs, not the checked-in seeds of tests/fuzz/corpus/); a crashing input is
# written to build-fuzz/artifacts/<target>/ and can be replayed with
# build-fuzz/bin/<target> FILE. Run scripts/setup.sh first (clang, vocabulary).
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_TARGET=${1:-20}
JOBS=${JOBS:-$(nproc)}
BUILD=${BUILD:-build-fuzz}
CXX_COMPILER=${FUZZ_CXX:-clang++-14}
TARGETS=${FUZZ_TARGETS:-$(cd tests/fuzz/corpus && echo *)}

[ -f data/gpt2/encoder.json ] || { echo "fuzz: no data/gpt2; run scripts/setup.sh" >&2; exit 1; }
command -v "$CXX_COMPILER" >/dev/null || { echo "fuzz: no $CXX_COMPILER; run scripts/setup.sh" >&2; exit 1; }

launcher=()
command -v ccache >/dev/null 2>&1 && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
cmake -S . -B "$BUILD" -DCMAKE_CXX_COMPILER="$CXX_COMPILER" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1 -DNDEBUG" \
  -DNANOSERVE_FUZZ=ON -DNANOSERVE_BUILD_TESTS=OFF "${launcher[@]}" >/dev/null
cmake --build "$BUILD" -j"$JOBS" --target nanoserve_fuzzers

export ASAN_OPTIONS="halt_on_error=1:detect_stack_use_after_return=1:check_initialization_order=1:strict_init_order=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:suppressions=$PWD/scripts/sanitizers/ubsan.supp"
export LSAN_OPTIONS="suppressions=$PWD/scripts/sanitizers/lsan.supp:print_suppressions=0"
mkdir -p "$BUILD/logs"
failed=()
for target in $TARGETS; do
  mkdir -p "$BUILD/corpus/$target" "$BUILD/artifacts/$target"
  log="$BUILD/logs/$target.log"
  # -timeout: an input that takes 30 s is a bug (one request must not stall
  # a service); -rss_limit_mb: LibTorch and ASan's shadow need more than 2 GB.
  if ! "$BUILD/bin/$target" -max_total_time="$SECONDS_PER_TARGET" -timeout=30 \
      -rss_limit_mb=4096 -print_final_stats=1 -artifact_prefix="$BUILD/artifacts/$target/" \
      "$BUILD/corpus/$target" "tests/fuzz/corpus/$target" >"$log" 2>&1; then
    tail -n 80 "$log"
    echo "fuzz: $target FAILED (log $log, input in $BUILD/artifacts/$target/)" >&2
    failed+=("$target")
    continue
  fi
  echo "fuzz: $target ok: $(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1)"
done
if ((${#failed[@]})); then
  echo "fuzz: failed: ${failed[*]}" >&2
  exit 1
fi
