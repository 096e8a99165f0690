#!/usr/bin/env bash
# One device call that checks a change and times it (after or including
# scripts/gpu/build.sh): the attention, model, prefix and kernel tests on CUDA
# in fp32; Part C's prefix sweep (32 x (900 shared + 50), 64 new) with naive
# and fused attention; bench-decode with the cuBLAS and the split-K graph
# steps, and the step's profile at batch 1 and 64; decode alone at 64 in
# flight with prefill token budgets 0 and 256 (chunk.sh); the kernel workbench
# (QUICK); then the whole suite in fp32 for as long as LIMIT_S (default 570 s
# from the start) allows. Logs under $OUT.
source "$(dirname "$0")/env.sh"
T0=$(date +%s)
elapsed() { echo $(( $(date +%s) - T0 )); }
BIN="$BUILD/bin/nanoserve"
echo "gpu: $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | head -1)"
NANOSERVE_TEST_DEVICE=cuda NANOSERVE_TEST_DTYPE=fp32 "$BUILD/bin/engine_test" \
  --gtest_filter='Attention*:Model*:Prefix*:Generate*:DecodeStep*' >"$OUT/quick-engine.log" 2>&1 &&
  NANOSERVE_TEST_DEVICE=cuda NANOSERVE_TEST_DTYPE=fp32 "$BUILD/bin/cuda_kernels_test" >>"$OUT/quick-engine.log" 2>&1 \
  && echo "engine + kernel tests fp32: ok" \
  || { echo "engine + kernel tests fp32: FAILED"; grep -E "FAILED|Failure|Expected|Which is" "$OUT/quick-engine.log" | head -20; }
echo "[$(elapsed)s] prefix sweep"
"$BIN" bench --model random:gpt2 --device cuda --dtype bf16 --attention naive,fused \
  --sweeps prefix --shared_lens 900 --batch_sizes 32 --suffix_len 50 --prefix_output 64 \
  --repeats 3 --warmup 1 --progress=false --out "$OUT/prefix.csv" 2>"$OUT/prefix.log" | tee "$OUT/prefix.md"
echo "[$(elapsed)s] bench-decode"
timeout 120 "$BIN" bench-decode --model random:gpt2 --device cuda --dtype bf16 --attention naive \
  --decode_step cuda-graph,cuda-graph-matvec --decode_batches 1,8,64 --repeats 3 \
  --out "$OUT/bench-decode.csv" 2>&1 | tee "$OUT/bench-decode.log" | tail -10
echo "[$(elapsed)s] profile"
timeout 90 "$BIN" bench-decode --model random:gpt2 --device cuda --dtype bf16 --attention naive \
  --decode_step cuda-graph --decode_batches 1,64 --repeats 2 --profile 2>&1 \
  | tee "$OUT/profile.log" | tail -40
echo "[$(elapsed)s] decode alone at 64 in flight, prefill token budgets"
CHUNKS=${CHUNKS:-"0 256"} timeout 150 "$ROOT/scripts/gpu/chunk.sh" | grep -E "^###|tok/s|TTFT|TPOT|throughput|failed" | head -24
echo "[$(elapsed)s] kernels"
QUICK=1 timeout 150 "$ROOT/scripts/gpu/kernels.sh" 2>&1 | tail -40
left=$(( ${LIMIT_S:-570} - $(elapsed) ))
echo "[$(elapsed)s] ctest fp32 for up to ${left}s"
if [ "$left" -gt 30 ]; then
  NANOSERVE_TEST_DEVICE=cuda NANOSERVE_TEST_DTYPE=fp32 timeout "$left" \
    ctest --test-dir "$BUILD" -j4 --output-on-failure >"$OUT/test-fp32.log" 2>&1
  echo "ctest rc=$?"; grep -E "tests passed|\(Failed\)|\(Timeout\)" "$OUT/test-fp32.log" | head -30
fi
echo "[$(elapsed)s] done"
