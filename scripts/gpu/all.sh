#!/usr/bin/env bash
# One device call, end to end: unpack the carried .debs, build with CUDA,
# make the HF golden record, run every test on CUDA in fp32 and bf16, then
# time generate. Logs and results land in $OUT; a short table prints last.
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
  python3 "$ROOT/scripts/timings.py" --binary "$BUILD/bin/nanoserve" --device cuda --dtype bf16 \
    --out "$OUT" 2>"$OUT/timings.log" | tee "$OUT/timings.md"
fi
exit $tests
