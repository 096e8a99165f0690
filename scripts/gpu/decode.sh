#!/usr/bin/env bash
# The decode-step issue's checks and timings in one device call (after
# scripts/gpu/build.sh in the same or an earlier call on the machine):
#   1. the fused kernels' tests and the decode-step tests on CUDA, fp32 and bf16
#   2. which SDPA backend has the cold-shape cost (sdpa_cold_probe.py)
#   3. nanoserve bench-decode: reference vs cuda-graph, naive vs fused, batch
#      1/8/64 (124M), batch 1/8 (1.5B), first pass and warm
#   4. the peers of shared/anchors in the same call, if carried in .peers/
# Logs and CSVs under $OUT; tables on stdout.
source "$(dirname "$0")/env.sh"
BIN="$BUILD/bin/nanoserve"
status=0
echo "gpu: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | head -1)"
for dtype in fp32 bf16; do
  if NANOSERVE_TEST_DEVICE=cuda NANOSERVE_TEST_DTYPE=$dtype "$BUILD/bin/cuda_kernels_test" >"$OUT/kernels-$dtype.log" 2>&1 &&
     NANOSERVE_TEST_DEVICE=cuda NANOSERVE_TEST_DTYPE=$dtype "$BUILD/bin/engine_test" \
       --gtest_filter='DecodeStep*:Generate*:BatchScheduler*:PrefixGenerate*' >"$OUT/decode-tests-$dtype.log" 2>&1; then
    echo "kernel + decode tests $dtype: ok ($(grep -h -E '^\[  PASSED' "$OUT/kernels-$dtype.log" "$OUT/decode-tests-$dtype.log" | tr '\n' ' '))"
  else
    status=1
    echo "kernel + decode tests $dtype: FAILED"
    grep -h -E "FAILED|Failure|Expected|Which is|error|rror:" "$OUT/kernels-$dtype.log" "$OUT/decode-tests-$dtype.log" | head -30
  fi
done
[ "${SKIP_PROBE:-0}" = 1 ] || python3 "$ROOT/scripts/gpu/sdpa_cold_probe.py" 2>&1 | tee "$OUT/sdpa-probe.log" | tail -14
"$BIN" bench-decode --model random:gpt2 --device cuda --dtype bf16 --attention naive,fused \
  --decode_batches "${BATCHES:-1,8,64}" --repeats 3 --out "$OUT/bench-decode-gpt2.csv" 2>&1 | tee "$OUT/bench-decode-gpt2.log"
if [ "${XL:-1}" = 1 ]; then
  "$BIN" bench-decode --model random:gpt2-xl --device cuda --dtype bf16 --attention naive \
    --decode_batches 1,8 --repeats 2 --out "$OUT/bench-decode-gpt2-xl.csv" 2>&1 | tee "$OUT/bench-decode-gpt2-xl.log" | tail -6
fi
if [ -d "$ROOT/.peers" ]; then
  for peer in "$ROOT"/.peers/*.py; do
    echo "peer $(basename "$peer"):"
    timeout 240 python3 "$peer" >"$OUT/peer-$(basename "$peer" .py).log" 2>&1 || echo "  (exit $?)"
    tail -12 "$OUT/peer-$(basename "$peer" .py).log"
  done
fi
exit $status
