#!/usr/bin/env bash
# The paged-KV issue's checks and timings in one device call (after
# scripts/gpu/build.sh in the same or an earlier call on the machine):
#   1. the paged kernels' tests and the prefix / scheduler / decode-step tests
#      on CUDA, fp32 and bf16
#   2. Part C on the GPU: 32 prompts of 900 shared + 50 own tokens, cache on vs
#      prefix reuse, naive and fused attention, 64 and 16 new tokens each
#      (TTFT, total, peak memory: nanoserve bench's table and CSV)
# Logs and CSVs under $OUT; tables on stdout.
source "$(dirname "$0")/env.sh"
BIN="$BUILD/bin/nanoserve"
status=0
echo "gpu: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | head -1)"
for dtype in fp32 bf16; do
  if NANOSERVE_TEST_DEVICE=cuda NANOSERVE_TEST_DTYPE=$dtype "$BUILD/bin/cuda_kernels_test" >"$OUT/kernels-$dtype.log" 2>&1 &&
     NANOSERVE_TEST_DEVICE=cuda NANOSERVE_TEST_DTYPE=$dtype "$BUILD/bin/engine_test" \
       --gtest_filter='Model*:DecodeStep*:Generate*:BatchScheduler*:Prefix*' >"$OUT/prefix-tests-$dtype.log" 2>&1 &&
     NANOSERVE_TEST_DEVICE=cuda NANOSERVE_TEST_DTYPE=$dtype "$BUILD/bin/kv_cache_test" \
       --gtest_filter='BlockTables*:PrefixCacheModel*' >>"$OUT/prefix-tests-$dtype.log" 2>&1; then
    echo "paged kernels + prefix tests $dtype: ok"
  else
    status=1
    echo "paged kernels + prefix tests $dtype: FAILED"
    grep -h -E "FAILED|Failure|Expected|Which is|error|rror:" "$OUT/kernels-$dtype.log" "$OUT/prefix-tests-$dtype.log" | head -30
  fi
done
for output in 64 16; do
  "$BIN" bench --model random:gpt2 --device cuda --dtype bf16 --attention naive,fused \
    --sweeps prefix --shared_lens 900 --batch_sizes 32 --suffix_len 50 --prefix_output "$output" \
    --repeats 3 --warmup 1 --progress=false --out "$OUT/prefix-$output.csv" \
    2>"$OUT/prefix-$output.log" | tee "$OUT/prefix-$output.md"
done
exit $status
