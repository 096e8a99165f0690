#!/usr/bin/env bash
# The long checks, for a nightly job or before a merge (docs/testing.md): every
# unit and integration test under ASan + UBSan, then each fuzzer for
# FUZZ_SECONDS (default 600) on its corpus. About 1.5 hours on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/sanitize.sh
scripts/fuzz.sh "${FUZZ_SECONDS:-600}"
