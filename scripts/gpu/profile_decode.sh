#!/usr/bin/env bash
# A profile of the decode step (after scripts/gpu/build.sh): nsys traces a
# `nanoserve generate` of BATCH prompts (cuda-graph decode, bf16, 124M or
# MODEL), kernels inside the graphs traced one by one; prints the kernels'
# summary (time per kernel name over the run) and the run's own figures,
# from which the GPU-busy time per step and the gaps follow.
source "$(dirname "$0")/env.sh"
BIN="$BUILD/bin/nanoserve"
MODEL=${MODEL:-random:gpt2}
NSYS=$(command -v nsys || ls /usr/local/cuda*/bin/nsys /opt/nvidia/nsight-systems*/bin/nsys 2>/dev/null | head -1 || true)
[ -n "$NSYS" ] || { echo "profile: no nsys on this machine"; exit 0; }
for batch in ${BATCHES:-1 64}; do
  prompts="$OUT/prompts-$batch.txt"
  : >"$prompts"
  for i in $(seq 1 "$batch"); do
    echo "Request $i: the quick brown fox jumps over the lazy dog and keeps running far away $i" >>"$prompts"
  done
  tag="$(basename "$MODEL" | tr ':' '-')-b$batch"
  "$NSYS" profile -t cuda --cuda-graph-trace=node -o "$OUT/prof-$tag" --force-overwrite true \
    "$BIN" generate --model "$MODEL" --device cuda --dtype bf16 --prompts_file "$prompts" \
    --max_new_tokens "${STEPS:-64}" --ignore_eos --json --repeat 2 >"$OUT/prof-$tag.json" 2>"$OUT/prof-$tag.log" \
    || { echo "profile $tag failed:"; tail -5 "$OUT/prof-$tag.log"; continue; }
  echo "== $tag: $(python3 -c "import json,sys; d=[json.loads(l) for l in open('$OUT/prof-$tag.json') if l.startswith('{')]; s=d[-1]['stats'] if 'stats' in d[-1] else d[-1]; print('decode ms/step', round(s.get('decode_ms_per_step',0),4), 'step', s.get('decode_step'))" 2>/dev/null)"
  "$NSYS" stats -q -r cuda_gpu_kern_sum --format csv "$OUT/prof-$tag.nsys-rep" 2>/dev/null \
    | python3 -c "
import csv, sys
rows = list(csv.DictReader(sys.stdin))
total = sum(float(r['Total Time (ns)']) for r in rows)
print(f'kernels: {len(rows)} names, {sum(int(r[\"Instances\"]) for r in rows)} launches, {total/1e6:.2f} ms in all')
for r in rows[:14]:
    print(f\"  {float(r['Time (%)']):5.1f}%  {int(r['Instances']):6d} x {float(r['Avg (ns)'])/1e3:8.2f} us  {r['Name'][:110]}\")
"
done
