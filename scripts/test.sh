#!/usr/bin/env bash
# Sets up (idempotent), builds and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
ctest --test-dir build --output-on-failure -j"${JOBS:-$(nproc)}"
