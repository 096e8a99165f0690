#!/usr/bin/env bash
# The KV data plane on the GPU machine (docs/services.md, "The KV data plane"),
# after scripts/gpu/build.sh: the data-plane and services tests on CUDA, then
# one table of the offline engine, decode alone, and the services over bytes
# and over CUDA IPC, all on this one card in this one run:
#   1. bench-services (batch 1: TTFT, ms/token, the handoff rate) per transport;
#   2. nanoserve load, 256 x (128 + 128) at 64 in flight, against decode alone
#      and the services per transport (gRPC), and the services over CUDA IPC
#      through the HTTP front door.
# Logs under $OUT; the tables print last.
source "$(dirname "$0")/env.sh"
set +e
B="$BUILD/bin"
MODEL=${MODEL:-random:gpt2}
DTYPE=${DTYPE:-bf16}
COMMON=(--model "$MODEL" --device cuda --dtype "$DTYPE")
CARD=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
echo "card: $CARD"

NANOSERVE_TEST_DEVICE=cuda NANOSERVE_TEST_DTYPE=fp32 \
  ctest --test-dir "$BUILD" -R 'DataPlane|SharedMemory|ServicesTest|Batching|Tls' -j4 \
  >"$OUT/ipc-tests.log" 2>&1
echo "tests (cuda fp32): $(grep -E 'tests passed|tests failed' "$OUT/ipc-tests.log")"
grep -E "^\s+[0-9]+ - .*\(Failed|Timeout\)" "$OUT/ipc-tests.log" | head -20

for t in bytes auto; do
  mkdir -p "$OUT/svc-$t"
  timeout 240 "$B/nanoserve" bench-services "${COMMON[@]}" --kv_transport "$t" \
    --prompt_lengths 16,128,512,900 --max_new_tokens 64 --repeats 5 \
    --work_dir "$OUT/svc-$t" --pool_mb 4096 >"$OUT/services-$t.md" 2>"$OUT/services-$t.err" \
    || { echo "bench-services $t failed"; tail -5 "$OUT/services-$t.err"; }
done

# wait_port PORT: until something listens there (60 s at most).
# load NAME TARGET [flags]: 256 x (128 + 128) at 64 in flight.
load() {
  local name=$1 target=$2; shift 2
  timeout 180 "$B/nanoserve" load --target "$target" --requests 256 --concurrency 64 \
    --prompt_len 128 --output_len 128 --timeout_s 120 --csv "$OUT/load-$name.csv" "$@" \
    >"$OUT/load-$name.txt" 2>&1 || echo "load $name: rc $?"
  echo "### $name" >>"$OUT/load.md"; cat "$OUT/load-$name.txt" >>"$OUT/load.md"
}

: >"$OUT/load.md"
"$B/nanoserve-decode" "${COMMON[@]}" --listen 127.0.0.1:52053 --http_listen= --metrics_listen= \
  --prefill= --kv_store= --max_batch 64 >"$OUT/decode-alone.log" 2>&1 &
pid=$!
wait_port 52053 && load decode-alone 127.0.0.1:52053
kill $pid; wait $pid 2>/dev/null

for t in bytes auto; do
  mkdir -p "$OUT/serve-$t"
  "$B/nanoserve" serve "${COMMON[@]}" --kv_transport "$t" --max_batch 64 --pool_mb 4096 \
    --kv_store_port 52061 --prefill_port 52062 --decode_port 52063 --http_port 52064 \
    --work_dir "$OUT/serve-$t" >"$OUT/serve-$t.log" 2>&1 &
  pid=$!
  if wait_port 52063 && wait_port 52064; then
    sleep 2
    load "services-$t" 127.0.0.1:52063
    [ "$t" = auto ] && load "services-$t-http" 127.0.0.1:52064 --http
  else
    echo "serve $t did not start"; tail -20 "$OUT/serve-$t.log"
  fi
  kill $pid; wait $pid 2>/dev/null
done
grep -h "kv store\|exported" "$OUT"/serve-auto/*.log 2>/dev/null | sort | uniq -c | head -8

echo; echo "== bench-services, bytes ($CARD)"; cat "$OUT/services-bytes.md"
echo; echo "== bench-services, auto (CUDA IPC) ($CARD)"; cat "$OUT/services-auto.md"
echo; echo "== load ($CARD)"; grep -E "^###|requests ok|output token throughput|\| TTFT|\| TPOT|failed x" "$OUT/load.md"
