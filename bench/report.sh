#!/usr/bin/env bash
# Regenerates docs/report.md, its plots and tables from the CSVs in docs/results/<kind>/.
#
#   bench/report.sh --cpu           rerun the CPU profile first (a few minutes on 2 cores)
#   bench/report.sh --gpu-dir DIR   first copy the GPU run's CSVs (DIR/*.csv, e.g. the
#                                   $OUT/results/gpu of scripts/gpu/bench.sh) to docs/results/gpu/
#   bench/report.sh                 only plots, tables and the report
#
# The CPU profile: GPT-2 124M (random weights), fp32, naive attention (the Debian LibTorch
# 1.13 has no fused attention); prompts 8..512 with 8 output tokens, outputs 8..256 after
# 8 prompt tokens, Part C shared 0..512 x batch 1,4,8 (+16 own tokens, 4 output).
set -euo pipefail
cd "$(dirname "$0")/.."
CPU=0
GPU_DIR=""
while (($#)); do
  case "$1" in
    --cpu) CPU=1 ;;
    --gpu-dir) GPU_DIR=$2; shift ;;
    *) echo "usage: bench/report.sh [--cpu] [--gpu-dir DIR]" >&2; exit 2 ;;
  esac
  shift
done
command -v gnuplot >/dev/null || { echo "report: gnuplot is missing (scripts/setup.sh installs it)" >&2; exit 1; }

if ((CPU)); then
  cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build build -j"${JOBS:-2}" --target nanoserve
  R=docs/results/cpu
  mkdir -p "$R"
  rm -f "$R"/*.csv "$R"/*.png "$R"/machine.txt
  {
    echo "cpu: $(grep 'model name' /proc/cpuinfo | head -1 | cut -d: -f2-) ($(nproc) CPUs)"
    echo "memory: $(free -g | awk '/Mem:/ {print $2}') GiB; $(uname -sr); $(date -u +%Y-%m-%dT%H:%MZ)"
    echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
  } >"$R/machine.txt"
  BENCH=(build/bin/nanoserve bench --device cpu --dtype fp32 --model random:gpt2 --attention naive)
  "${BENCH[@]}" --sweeps prompt --prompt_lens 8..512*2 --fixed_output 8 --repeats 5 --out "$R/nanoserve-gpt2-prompt.csv"
  "${BENCH[@]}" --sweeps output --output_lens 8..256*2 --fixed_prompt 8 --repeats 2 --out "$R/nanoserve-gpt2-output.csv"
  "${BENCH[@]}" --sweeps prefix --shared_lens 0,128,256,512 --batch_sizes 1,4,8 --suffix_len 16 \
    --prefix_output 4 --repeats 3 --out "$R/nanoserve-gpt2-prefix.csv"
  echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine slows the CPU timings)" >>"$R/machine.txt"
fi

if [[ -n "$GPU_DIR" ]]; then
  mkdir -p docs/results/gpu
  rm -f docs/results/gpu/*.csv docs/results/gpu/*.png docs/results/gpu/machine.txt
  cp "$GPU_DIR"/*.csv docs/results/gpu/
  [ -f "$GPU_DIR/machine.txt" ] && cp "$GPU_DIR/machine.txt" docs/results/gpu/
fi

python3 bench/report.py --results docs/results --report docs/report.md
