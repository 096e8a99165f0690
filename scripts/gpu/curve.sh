#!/usr/bin/env bash
# The services' latency against throughput (`nanoserve load --rates`) over gRPC
# bytes and over CUDA IPC, for one plot: `nanoserve serve` on the one card with
# --kv_transport bytes, then auto (CUDA IPC), each swept over RATES at up to 64
# in flight, 128 requests of 128 + 128 tokens a rate (after scripts/gpu/build.sh).
# Writes $OUT/curve-bytes.csv and $OUT/curve-cuda_ipc.csv (the sweep CSVs) and
# the tables; draw them on the development machine (the GPU machine has no
# gnuplot):
#   bench/load_plot.py --csv bytes=curve-bytes.csv --csv cuda_ipc=curve-cuda_ipc.csv --png P
source "$(dirname "$0")/env.sh"
set +e
B="$BUILD/bin"
COMMON=(--model "${MODEL:-random:gpt2}" --device cuda --dtype "${DTYPE:-bf16}")
echo "card: $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)"
for transport in bytes cuda_ipc; do
  flag=$transport; [ "$transport" = cuda_ipc ] && flag=auto
  mkdir -p "$OUT/curve-$transport"
  "$B/nanoserve" serve "${COMMON[@]}" --kv_transport "$flag" --max_batch 64 --pool_mb 4096 \
    --kv_store_port 52261 --prefill_port 52262 --decode_port 52263 --http_port 52264 \
    --work_dir "$OUT/curve-$transport" >"$OUT/curve-$transport.log" 2>&1 &
  pid=$!
  if wait_port 52263; then
    sleep 2
    timeout "${LIMIT_S:-200}" "$B/nanoserve" load --target 127.0.0.1:52263 --requests 128 \
      --concurrency 64 --rates "${RATES:-16,64,256,inf}" --prompt_len 128 --output_len 128 \
      --timeout_s 60 --sweep_csv "$OUT/curve-$transport.csv" >"$OUT/curve-$transport.txt" 2>&1 \
      || echo "load $transport: rc $?"
    echo "### $transport"; grep -E "^\| (rate|[0-9]|inf)" "$OUT/curve-$transport.txt"
  else
    echo "serve ($transport) did not start"; tail -20 "$OUT/curve-$transport.log"
  fi
  kill $pid; wait $pid 2>/dev/null
done
exit 0
