#!/usr/bin/env bash
# The services benchmark on the GPU machine: starts nanoserve-kv-store,
# nanoserve-prefill and nanoserve-decode on loopback with --device cuda and
# prints TTFT, time per output token (offline engine vs services) and the KV
# handoff rate. Run after scripts/gpu/build.sh. Full logs under $OUT.
# MODEL, DTYPE and ATTENTION (naive or fused) choose the model of both paths.
source "$(dirname "$0")/env.sh"
MODEL=${MODEL:-random:gpt2}
DTYPE=${DTYPE:-bf16}
ATTENTION=${ATTENTION:-naive}
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$OUT/services-card.txt"
mkdir -p "$OUT/services-logs"
"$BUILD/bin/nanoserve" bench-services --model "$MODEL" --device cuda --dtype "$DTYPE" \
  --attention "$ATTENTION" \
  --prompt_lengths 16,128,512,900 --max_new_tokens 64 --repeats 5 \
  --work_dir "$OUT/services-logs" --pool_mb 4096 2>"$OUT/services-bench.err" \
  | tee "$OUT/services-bench.md"
status=${PIPESTATUS[0]}
[ "$status" = 0 ] || { echo "bench-services failed:"; tail -20 "$OUT/services-bench.err"; tail -20 "$OUT"/services-logs/*.log; }
exit "$status"
