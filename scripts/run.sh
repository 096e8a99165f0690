#!/usr/bin/env bash
# Sets up (idempotent), builds and runs a generation on the embedded default
# model (random:gpt2 unless a checkpoint is found; see README). Extra
# arguments go to `nanoserve generate`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
exec build/bin/nanoserve generate --prompt "The key to fast inference is" --max-new-tokens 32 "$@"
