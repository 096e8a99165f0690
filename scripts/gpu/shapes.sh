#!/usr/bin/env bash
# Decode alone (it prefills in its loop) at 64 in flight, 256 x (128 + 128),
# once per VARIANT "decode_step:CUDA_MODULE_LOADING" (default: the eager
# prefill passes, then prefill as CUDA graphs, both LAZY): the load's
# throughput and TTFT, decode's start-up, and its slow turns that admitted
# prompts (after scripts/gpu/build.sh). Logs under $OUT. (LAZY against EAGER
# asks whether a prefill shape new to the process is slow the first time
# because CUDA loads each kernel on its first use.)
source "$(dirname "$0")/env.sh"
set +e
B="$BUILD/bin"
COMMON=(--model "${MODEL:-random:gpt2}" --device cuda --dtype "${DTYPE:-bf16}")
echo "card: $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)"
for variant in ${VARIANTS:-cuda-graph-eager-prefill:LAZY cuda-graph:LAZY}; do
  kind=${variant%%:*} loading=${variant##*:}
  CUDA_MODULE_LOADING=$loading "$B/nanoserve-decode" "${COMMON[@]}" --listen 127.0.0.1:52253 \
    --decode_step "$kind" \
    --http_listen= --metrics_listen= --prefill= --kv_store= --max_batch 64 --slow_turn_ms 5 \
    >"$OUT/shapes-$kind-$loading-decode.log" 2>&1 &
  pid=$!
  if wait_port 52253; then
    timeout 180 "$B/nanoserve" load --target 127.0.0.1:52253 --requests 256 --concurrency 64 \
      --prompt_len 128 --output_len 128 --timeout_s 120 --csv "$OUT/shapes-$kind-$loading.csv" \
      >"$OUT/shapes-$kind-$loading.txt" 2>&1 || echo "load $kind $loading: rc $?"
    echo "### --decode_step $kind, CUDA_MODULE_LOADING=$loading"
    grep -E "requests ok|output token throughput|\| TTFT|\| TPOT" "$OUT/shapes-$kind-$loading.txt"
    grep -E "warmed up|serving on" "$OUT/shapes-$kind-$loading-decode.log"
    grep "decode scheduler: a turn" "$OUT/shapes-$kind-$loading-decode.log" | grep -v "(0 prompt" |
      sed -n 3,10p | cut -c1-150
  else
    echo "decode ($kind, $loading) did not start"; tail -5 "$OUT/shapes-$kind-$loading-decode.log"
  fi
  kill $pid; wait $pid 2>/dev/null
done
exit 0
