#!/usr/bin/env bash
# Where a cuda-graph decode step's time goes (after scripts/gpu/build.sh):
# nanoserve bench-decode --profile times each kind of operation of the step
# in a CUDA graph of its own, and the whole step's replay, at batch 1/8/64
# for GPT-2 124M and batch 1/8 for 1.5B (bf16). The GPU machine has no
# Nsight tools; this needs none.
source "$(dirname "$0")/env.sh"
BIN="$BUILD/bin/nanoserve"
"$BIN" bench-decode --model random:gpt2 --device cuda --dtype bf16 --attention naive \
  --decode_step cuda-graph --decode_batches "${BATCHES:-1,8,64}" --repeats 2 --profile \
  2>&1 | tee "$OUT/profile-gpt2.log"
[ "${XL:-1}" = 1 ] && "$BIN" bench-decode --model random:gpt2-xl --device cuda --dtype bf16 \
  --attention naive --decode_step cuda-graph --decode_batches 1,8 --repeats 2 --profile \
  2>&1 | tee "$OUT/profile-gpt2-xl.log"
exit 0
