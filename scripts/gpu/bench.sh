#!/usr/bin/env bash
# The GPU profile of docs/report.md in one device call (run scripts/gpu/build.sh first,
# in this call or an earlier one on the same machine):
#   1. nanoserve bench, GPT-2 124M: prompt and output sweeps 8..1000, Part C, naive + fused
#   2. the HF peer (bench/hf_peer.py) on the 124M weights the engine exports
#   3. nanoserve bench, GPT-2 1.5B: the same sweeps, shorter outputs, fewer repeats
#   4. plots and tables under $OUT/results/gpu/, a short table last
# bf16, random weights. Each stage has a time budget (--max-seconds; 100 + 110 + 180 s by
# default, about 7 minutes in all with model loading and plots): points not started in time
# are skipped and counted, so the call ends in time. BENCH_BUDGET_PCT=60 scales the budgets
# down (e.g. when build.sh runs in the same call), 200 up.
# Logs: $OUT/bench-*.log. Then, on the dev machine: bench/report.sh --gpu-dir <files_at>/results/gpu
source "$(dirname "$0")/env.sh"
BIN="$BUILD/bin/nanoserve"
[ -x "$BIN" ] || { echo "bench: $BIN is missing: run scripts/gpu/build.sh first"; exit 1; }
R="$OUT/results/gpu"
mkdir -p "$R"
PCT=${BENCH_BUDGET_PCT:-100}
budget() { echo $(( $1 * PCT / 100 )); }
{
  echo "gpu: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | head -1)"
  echo "host: $(grep 'model name' /proc/cpuinfo | head -1 | cut -d: -f2-) ($(nproc) CPUs); $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "torch $(python3 -c 'import torch; print(torch.__version__)'), transformers $(python3 -c 'import transformers; print(transformers.__version__)' 2>&1 | tail -1)"
} | tee "$R/machine.txt"
# The card's name as HF's peer writes it (torch.cuda.get_device_name), for the CSVs.
CARD=$(nvidia-smi --query-gpu=name --format=csv,noheader -i 0 2>/dev/null | head -1 || true)
COMMON=(--device cuda --dtype bf16 --attention naive,fused --progress=false ${CARD:+--card "$CARD"})
stage() {  # name, budget seconds, then the command
  local name=$1 seconds=$2; shift 2
  local t0=$SECONDS
  if "$@" >"$OUT/bench-$name.log" 2>&1; then
    echo "stage $name: ok in $((SECONDS - t0)) s (budget $seconds s): $(grep -E '^bench: .* points written|^hf_peer: wrote' "$OUT/bench-$name.log" | tail -1)"
  else
    echo "stage $name: FAILED after $((SECONDS - t0)) s; last lines:"; tail -15 "$OUT/bench-$name.log"
  fi
}

stage gpt2 "$(budget 100)" "$BIN" bench --model random:gpt2 "${COMMON[@]}" \
  --sweeps prompt,output,prefix --prompt_lens 8..1000*2 --output_lens 8..1000*2 \
  --shared_lens 0,128,256,512,900 --batch_sizes 1,4,16 --repeats 3 \
  --max_seconds "$(budget 100)" --out "$R/nanoserve-gpt2.csv"

HF_DIR=/tmp/nanoserve-hf-gpt2
"$BIN" export-hf --model random:gpt2 --out "$HF_DIR" >"$OUT/bench-export.log" 2>&1 \
  || { echo "export-hf failed:"; tail -5 "$OUT/bench-export.log"; }
stage hf-gpt2 "$(budget 110)" python3 "$ROOT/bench/hf_peer.py" --model random:gpt2 --hf-checkpoint "$HF_DIR" \
  --device cuda --dtype bf16 --attention naive,fused --sweeps prompt,output,prefix \
  --prompt-lens 8..1000*2 --output-lens 8..256*2 --shared-lens 0,128,256,512,900 --batch-sizes 1,4,16 \
  --repeats 2 --max-seconds "$(budget 110)" --out "$R/hf-gpt2.csv"

stage gpt2-xl "$(budget 180)" "$BIN" bench --model random:gpt2-xl "${COMMON[@]}" \
  --sweeps prompt,output,prefix --prompt_lens 8..1000*2 --output_lens 8..512*2 \
  --shared_lens 0,128,256,512,900 --batch_sizes 1,4,16 --repeats 2 \
  --max_seconds "$(budget 180)" --out "$R/nanoserve-gpt2-xl.csv"

python3 "$ROOT/bench/report.py" --results "$OUT/results" --report "$OUT/report.md" >"$OUT/report.log" 2>&1 \
  || { echo "report failed:"; tail -20 "$OUT/report.log"; }
PNGS=$(cd "$R" && ls *.png 2>/dev/null | tr '\n' ' ' || true)
echo "plots: ${PNGS:-none (no gnuplot on this machine: bench/report.sh --gpu-dir DIR draws them on the dev machine)}"
python3 "$ROOT/bench/report.py" --results "$OUT/results" --brief --no-plots
