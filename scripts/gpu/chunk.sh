#!/usr/bin/env bash
# Decode alone (it computes its prompts itself) at 64 in flight, 256 x (PROMPT
# + 128) tokens, with each --prefill_chunk of CHUNKS (a token budget per
# scheduler turn; 0 = every prompt at admission): throughput, TTFT and time per
# output token, one `nanoserve load` each (after scripts/gpu/build.sh). Logs
# and CSVs under $OUT; a table on stdout.
source "$(dirname "$0")/env.sh"
set +e
B="$BUILD/bin"
COMMON=(--model "${MODEL:-random:gpt2}" --device cuda --dtype "${DTYPE:-bf16}")
echo "card: $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)"
for chunk in ${CHUNKS:-0 128 512}; do
  "$B/nanoserve-decode" "${COMMON[@]}" --listen 127.0.0.1:52153 --http_listen= \
    --metrics_listen= --prefill= --kv_store= --max_batch 64 --prefill_chunk "$chunk" \
    >"$OUT/chunk-$chunk-decode.log" 2>&1 &
  pid=$!
  if wait_port 52153; then
    timeout 180 "$B/nanoserve" load --target 127.0.0.1:52153 --requests 256 --concurrency 64 \
      --prompt_len "${PROMPT:-128}" --output_len 128 --timeout_s 120 \
      --csv "$OUT/chunk-$chunk.csv" >"$OUT/chunk-$chunk.txt" 2>&1 || echo "load chunk $chunk: rc $?"
    echo "### --prefill_chunk $chunk"; cat "$OUT/chunk-$chunk.txt"
  else
    echo "decode (chunk $chunk) did not start"; tail -5 "$OUT/chunk-$chunk-decode.log"
  fi
  kill $pid; wait $pid 2>/dev/null
done
exit 0
