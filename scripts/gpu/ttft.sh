#!/usr/bin/env bash
# Where a request's time to first token goes through the services, and what
# sharing the card between processes costs (docs/services.md, "The KV data
# plane"), after scripts/gpu/build.sh, all on this one card in this one run:
#   1. bench-services over CUDA IPC: the offline engine's TTFT beside the
#      services', and the services' split (gRPC, prefill's own time, its
#      store calls, decode's share);
#   2. nanoserve load, 256 x (128 + 128) at 64 in flight: decode alone, then
#      the services over CUDA IPC, over gRPC and over the HTTP front door;
#   3. the services again under CUDA MPS (one server that runs every process's
#      kernels in one context, so prefill's and decode's kernels may overlap),
#      where the machine has nvidia-cuda-mps-control: the loads with `serve
#      --mps on` (serve's own daemon; the rows before run with --mps off), and
#      bench-services under a daemon this script starts and stops; and the
#      loads again with prefill's MPS client priority below decode's
#      (--mps_prefill_priority below_normal; MPS_LOW=0 leaves them out), and
#      with prefill held to a share of the SMs (MPS_SM="50 75": one stack each).
# TESTS=0, BENCH=0 (the first bench-services and its traced run; TRACE=0 the traced run
# alone), BENCH_MPS=0, HTTP=0, AGAIN=0 (the second gRPC load on each stack) and MPS_RUNS=0
# leave parts out; LOAD_RUNS=N repeats the loads N
# times, without MPS and with it; REQUESTS=N (default 256) sets each load's requests: 256 take
# 0.5-0.7 s on an H100, where ramp-up and tail weigh and runs spread by +-10%. Logs under $OUT;
# the tables print last.
source "$(dirname "$0")/env.sh"
set +e
B="$BUILD/bin"
MODEL=${MODEL:-random:gpt2}
DTYPE=${DTYPE:-bf16}
COMMON=(--model "$MODEL" --device cuda --dtype "$DTYPE")
CARD=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
echo "card: $CARD"

if [ "${TESTS:-1}" = 1 ]; then
  NANOSERVE_TEST_DEVICE=cuda NANOSERVE_TEST_DTYPE=fp32 \
    ctest --test-dir "$BUILD" -R 'DataPlane|SharedMemory|ServicesTest|PrefillStage|DecodeStage' -j4 \
    >"$OUT/ttft-tests.log" 2>&1
  echo "tests (cuda fp32): $(grep -E 'tests passed|tests failed' "$OUT/ttft-tests.log")"
  grep -E "^\s+[0-9]+ - .*\(Failed|Timeout\)" "$OUT/ttft-tests.log" | head -20
fi

# wait_port PORT: until something listens there (60 s at most).
# bench NAME: batch 1 through the services over CUDA IPC.
bench() {
  mkdir -p "$OUT/svc-$1"
  timeout 240 "$B/nanoserve" bench-services "${COMMON[@]}" --kv_transport auto \
    --prompt_lengths 16,128,512,900 --max_new_tokens 32 --repeats 7 \
    --work_dir "$OUT/svc-$1" --pool_mb 4096 >"$OUT/services-$1.md" 2>"$OUT/services-$1.err" \
    || { echo "bench-services $1 failed"; tail -5 "$OUT/services-$1.err"; }
}
# load NAME TARGET [flags]: 256 x (128 + 128) at 64 in flight.
load() {
  local name=$1 target=$2; shift 2
  timeout 180 "$B/nanoserve" load --target "$target" --requests "${REQUESTS:-256}" --concurrency 64 \
    --prompt_len 128 --output_len 128 --timeout_s 120 --csv "$OUT/load-$name.csv" "$@" \
    >"$OUT/load-$name.txt" 2>&1 || echo "load $name: rc $?"
  echo "### $name" >>"$OUT/load.md"; cat "$OUT/load-$name.txt" >>"$OUT/load.md"
}
# loads SUFFIX MPS ALONE [serve flags]: decode alone (ALONE=alone), then the
# services over CUDA IPC, serve --mps MPS and the flags.
loads() {
  local pid suffix=$1 mps=$2 alone=$3
  shift 3
  if [ "$alone" = alone ]; then
    "$B/nanoserve-decode" "${COMMON[@]}" --listen 127.0.0.1:52053 --http_listen= \
      --metrics_listen= --prefill= --kv_store= --max_batch 64 --slow_turn_ms "${SLOW_TURN_MS:-5}" \
      >"$OUT/decode-alone$suffix.log" 2>&1 &
    pid=$!
    wait_port 52053 && load "decode-alone$suffix" 127.0.0.1:52053
    kill $pid; wait $pid 2>/dev/null
  fi
  mkdir -p "$OUT/serve$suffix"
  "$B/nanoserve" serve "${COMMON[@]}" --kv_transport auto --max_batch 64 --pool_mb 4096 --mps "$mps" \
    --kv_store_port 52061 --prefill_port 52062 --decode_port 52063 --http_port 52064 \
    --work_dir "$OUT/serve$suffix" --slow_turn_ms "${SLOW_TURN_MS:-5}" "$@" >"$OUT/serve$suffix.log" 2>&1 &
  pid=$!
  if wait_port 52063; then
    sleep 2
    load "services-ipc$suffix" 127.0.0.1:52063
    # The same again on the now warm stack (AGAIN=0 leaves it out): what the
    # first run pays that the warm-up did not.
    [ "${AGAIN:-1}" = 1 ] && load "services-ipc$suffix-again" 127.0.0.1:52063
    # The HTTP front door of the same stack: the target is zero failures.
    [ "${HTTP:-1}" = 1 ] && load "services-http$suffix" 127.0.0.1:52064 --http
  else
    echo "serve$suffix did not start"; tail -20 "$OUT/serve$suffix.log"
  fi
  kill $pid; wait $pid 2>/dev/null
}

: >"$OUT/load.md"
[ "${BENCH:-1}" = 1 ] && bench plain
# The same with the first-token trace on (base/first_token_trace.h; TRACE=0
# leaves it out): where a lone request's time goes, step by step.
if [ "${BENCH:-1}" = 1 ] && [ "${TRACE:-1}" = 1 ]; then
  NANOSERVE_TRACE_FIRST_TOKEN=1 bench trace
  python3 "$ROOT/scripts/first_token_split.py" "$OUT"/svc-trace/nanoserve-*.log >"$OUT/first-token-split.md" 2>&1
fi
for ((run = 1; run <= ${LOAD_RUNS:-1}; run++)); do
  suffix=""; [ "$run" -gt 1 ] && suffix="-$run"
  loads "$suffix" off alone
done

MPS=no
if [ "${MPS_RUNS:-1}" = 0 ]; then
  echo "MPS: left out (MPS_RUNS=0)"
elif command -v nvidia-cuda-mps-control >/dev/null 2>&1; then
  MPS=yes
  for ((run = 1; run <= ${LOAD_RUNS:-1}; run++)); do
    suffix="-mps"; [ "$run" -gt 1 ] && suffix="-mps-$run"
    loads "$suffix" on no
    # Prefill's kernels below decode's in the MPS server's scheduling.
    [ "${MPS_LOW:-1}" = 1 ] && loads "$suffix-low" on no --mps_prefill_priority below_normal
    # Prefill's kernels held to a share of the SMs (MPS_SM="50 75" tries each).
    for share in ${MPS_SM:-}; do
      loads "$suffix-sm$share" on no --mps_prefill_sm_percent "$share"
    done
  done
  grep -h "MPS" "$OUT"/serve-mps.log "$OUT"/serve-mps-low.log 2>/dev/null | head -4
  if [ "${BENCH_MPS:-1}" = 1 ]; then
    export CUDA_MPS_PIPE_DIRECTORY=/tmp/nanoserve-mps/pipe CUDA_MPS_LOG_DIRECTORY=/tmp/nanoserve-mps/log
    mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
    if nvidia-cuda-mps-control -d; then
      bench mps
      echo quit | nvidia-cuda-mps-control
      sleep 1
      cp "$CUDA_MPS_LOG_DIRECTORY"/*.log "$OUT/" 2>/dev/null
    else
      echo "MPS: the daemon did not start"
    fi
  fi
else
  echo "MPS: nvidia-cuda-mps-control not on this machine"
fi

[ -s "$OUT/services-plain.md" ] && { echo; echo "== bench-services, CUDA IPC ($CARD)"; cat "$OUT/services-plain.md"; }
[ -s "$OUT/first-token-split.md" ] && { echo; echo "== the first token's way, traced ($CARD)"; cat "$OUT/first-token-split.md"; }
# What prefill measured of a match (after idleness, and back to back) and
# whether it mapped the store's page index (cold prompts then ask nothing).
grep -rh "a match at the kv store costs\|pages mapped" "$OUT"/svc-plain "$OUT"/serve 2>/dev/null | sort -u | head -6
if [ "$MPS" = yes ] && [ -s "$OUT/services-mps.md" ]; then echo; echo "== bench-services, CUDA IPC, under MPS ($CARD)"; cat "$OUT/services-mps.md"; fi
# Decode's turns over SLOW_TURN_MS (default 5 ms) and where their time went.
for f in "$OUT"/decode-alone*.log "$OUT"/serve*/nanoserve-decode.log; do
  [ -f "$f" ] || continue
  n=$(grep -c "decode scheduler: a turn" "$f")
  [ "$n" -gt 0 ] && { echo "== slow turns in $f: $n lines, the first 3:"; grep "decode scheduler: a turn" "$f" | head -3; }
done
# Prefill's batches over the same (serve passes it as --slow_batch_ms), to set beside them.
for f in "$OUT"/serve*/nanoserve-prefill.log; do
  [ -f "$f" ] || continue
  n=$(grep -c "prefill: a batch" "$f")
  [ "$n" -gt 0 ] && { echo "== slow batches in $f: $n lines, the first 3:"; grep "prefill: a batch" "$f" | head -3; }
done
echo; echo "== load ($CARD)"
grep -E "^###|requests ok|output token throughput|\| TTFT|\| TPOT|failed x|computed the prompt itself|second token|admission to" "$OUT/load.md"
