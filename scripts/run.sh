#!/usr/bin/env bash
# Sets up (idempotent), builds, starts the three services (KV store, prefill,
# decode) on free loopback ports with the embedded default model (random:gpt2
# unless a checkpoint is found; see README), streams one generation through
# them and stops them. Extra arguments go to `nanoserve serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
mkdir -p build/serve-logs
exec build/bin/nanoserve serve --prompt "The key to fast inference is" --max_new_tokens 32 \
  --kv_store_port 0 --prefill_port 0 --decode_port 0 --http_port 0 --work_dir build/serve-logs "$@"
