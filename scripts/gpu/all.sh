#!/usr/bin/env bash
# One device call, end to end: unpack the carried .debs, build with CUDA,
# make the HF golden record, run every test on CUDA in fp32 and bf16, then
# time the engine (nanoserve bench: Parts A-C at the points of docs/engine.md and
# docs/prefix-cache.md). Logs and results land in $OUT; the timing table prints last.
#   run: scripts/gpu/all.sh [--no-timings]   (carry .debs and data/gpt2)
set -uo pipefail
DIR=$(cd "$(dirname "$0")" && pwd)
source "$DIR/env.sh"
set +e
"$DIR/build.sh" || exit 1
python3 "$DIR/make_golden.py" >"$OUT/golden.log" 2>&1 && echo "golden: $(tail -1 "$OUT/golden.log")" \
  || { echo "golden: FAILED"; tail -20 "$OUT/golden.log"; }
mkdir -p "$OUT/tests_data" && cp -r "$ROOT/tests/data/." "$OUT/tests_data/"
"$DIR/test.sh"; tests=$?
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
if [ "${1:-}" != "--no-timings" ]; then
  # GPT-2 124M, naive and fused attention, median of 3 after a warm-up. Parts A/B: one prompt
  # (batch 1) of 8, 128, 512, 896 tokens + 128 new, and 128 + 512 new, cache off vs on.
  # Part C: 32 prompts of 900 shared + 50 own tokens, 64 new each, cache on vs prefix reuse.
  "$BUILD/bin/nanoserve" bench --model random:gpt2 --device cuda --dtype bf16 \
    --attention naive,fused --sweeps prompt,output,prefix \
    --prompt_lens 8,128,512,896 --fixed_output 128 --output_lens 512 --fixed_prompt 128 \
    --shared_lens 900 --batch_sizes 32 --suffix_len 50 --prefix_output 64 \
    --repeats 3 --warmup 1 --progress=false --out "$OUT/timings.csv" \
    2>"$OUT/timings.log" | tee "$OUT/timings.md"
fi
exit $tests
