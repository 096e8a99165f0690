#!/usr/bin/env bash
# Runs the whole test suite on CUDA, in fp32 and in bf16.
source "$(dirname "$0")/env.sh"
status=0
for dtype in fp32 bf16; do
  if NANOSERVE_TEST_DEVICE=cuda NANOSERVE_TEST_DTYPE=$dtype \
     ctest --test-dir "$BUILD" --output-on-failure -j4 >"$OUT/test-cuda-$dtype.log" 2>&1; then
    echo "tests cuda $dtype: $(grep -E 'tests passed' "$OUT/test-cuda-$dtype.log")"
  else
    status=1
    echo "tests cuda $dtype: FAILED"; grep -E "Failed|FAILED|Expected|Which is|error" "$OUT/test-cuda-$dtype.log" | head -40
  fi
done
exit $status
