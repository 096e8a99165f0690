#!/usr/bin/env bash
# The two-GPU layout of one host (issue 20), after scripts/gpu/build.sh, on a
# machine with two GPUs (nvidia-h100-x2): prefill on cuda:0, the KV store and
# decode on cuda:1, pages moving by peer copies through the store's CUDA IPC
# mapping.
#   1. TwoGpuServicesTest on CUDA (fp32): the offline engine's tokens, no Fetch;
#   2. 256 x (128 + 128) at 64 in flight (nanoserve load): decode alone on
#      cuda:1, then the split stack.
# Logs under $OUT; the load tables print last.
source "$(dirname "$0")/env.sh"
set +e
B="$BUILD/bin"
COMMON=(--model "${MODEL:-random:gpt2}" --dtype "${DTYPE:-bf16}" --metrics_listen=)
echo "gpus: $(nvidia-smi --query-gpu=name --format=csv,noheader | tr '\n' ',' )"
[ "$(nvidia-smi -L | wc -l)" -ge 2 ] || { echo "needs two GPUs"; exit 1; }
NANOSERVE_TEST_DEVICE=cuda NANOSERVE_TEST_DTYPE=fp32 "$B/integration_test" \
  --gtest_filter='TwoGpuServicesTest.*' >"$OUT/two-gpu-test.log" 2>&1
echo "TwoGpuServicesTest: $(grep -E '^\[  (PASSED|FAILED|SKIPPED)' "$OUT/two-gpu-test.log" | tr '\n' ' ')"
load() {
  timeout 180 "$B/nanoserve" load --target "$2" --requests 256 --concurrency 64 \
    --prompt_len 128 --output_len 128 --timeout_s 120 --csv "$OUT/load-$1.csv" \
    >"$OUT/load-$1.txt" 2>&1 || echo "load $1: rc $?"
  echo "### $1"; grep -E "requests ok|output token throughput|\| TTFT|\| TPOT|failed x" "$OUT/load-$1.txt"
}
"$B/nanoserve-decode" "${COMMON[@]}" --device cuda:1 --listen 127.0.0.1:52083 --http_listen= \
  --prefill= --kv_store= --max_batch 64 >"$OUT/two-gpu-decode-alone.log" 2>&1 &
pid=$!
wait_port 52083 && load decode-alone-cuda1 127.0.0.1:52083
kill $pid; wait $pid 2>/dev/null
"$B/nanoserve-kv-store" "${COMMON[@]}" --device cuda:1 --listen 127.0.0.1:52081 --pool_mb 4096 \
  >"$OUT/two-gpu-store.log" 2>&1 &
store=$!
wait_port 52081
"$B/nanoserve-prefill" "${COMMON[@]}" --device cuda:0 --listen 127.0.0.1:52082 \
  --kv_store 127.0.0.1:52081 >"$OUT/two-gpu-prefill.log" 2>&1 &
prefill=$!
wait_port 52082
"$B/nanoserve-decode" "${COMMON[@]}" --device cuda:1 --listen 127.0.0.1:52084 --http_listen= \
  --prefill 127.0.0.1:52082 --kv_store 127.0.0.1:52081 --max_batch 64 >"$OUT/two-gpu-decode.log" 2>&1 &
decode=$!
if wait_port 52084; then
  sleep 2
  load services-two-gpu 127.0.0.1:52084
  grep -h "mapped\|bytes" "$OUT/two-gpu-prefill.log" "$OUT/two-gpu-decode.log" | head -4
else
  echo "the split stack did not start"; tail -5 "$OUT"/two-gpu-*.log
fi
kill $decode $prefill $store; wait 2>/dev/null
