#!/usr/bin/env bash
# Configures and builds nanoserve (CPU) into build/; binaries land in build/bin/.
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS=${JOBS:-$(nproc)}
LAUNCHER=()
if command -v ccache >/dev/null 2>&1; then LAUNCHER=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache); fi
# Ninja where it is (scripts/setup.sh installs it): it compiles a target's
# files while the libraries it links are still being linked, where Make waits
# for each whole target; a build folder made by another generator keeps it.
GENERATOR=()
if command -v ninja >/dev/null 2>&1 &&
   { [ ! -f build/CMakeCache.txt ] || grep -q '^CMAKE_GENERATOR:INTERNAL=Ninja$' build/CMakeCache.txt; }; then
  GENERATOR=(-G Ninja)
fi
cmake -S . -B build "${GENERATOR[@]}" -DCMAKE_BUILD_TYPE=Release "${LAUNCHER[@]}" >/dev/null
cmake --build build -j"$JOBS"
