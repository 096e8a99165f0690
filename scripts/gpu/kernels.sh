#!/usr/bin/env bash
# The kernel workbench (engine/cuda/workbench/README.md) on the GPU machine:
# builds each program with nvcc alone (no LibTorch, no .debs) and runs them,
# printing one table: each kernel version on GPT-2's shapes, its max error
# against an fp64 CPU reference and whether that is within tolerance, its
# time as a graph node (median), GB/s, % of the bandwidth floor (bytes over
# the copy bandwidth the program measures), and cuBLASLt's time on the same
# shape. Full logs, the table and the compiler's resource report under $OUT.
#
#   scripts/gpu/kernels.sh            # everything, about 2-3 minutes
#   QUICK=1 scripts/gpu/kernels.sh    # two shapes per family, batch 1 and 8
#   FILTER=splitk scripts/gpu/kernels.sh
# Exit status 1 if a build, a program or a check failed.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
OUT=${OUT:-$ROOT/out}
BUILD=${BUILD:-$ROOT/build-workbench}
SRC="$ROOT/engine/cuda/workbench"
mkdir -p "$OUT" "$BUILD"
status=0

NVCC=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
[ -x "$NVCC" ] || { echo "kernels: no nvcc on PATH or in /usr/local/cuda/bin"; exit 1; }
CUDA_HOME=${CUDA_HOME:-$(dirname "$(dirname "$(readlink -f "$NVCC")")")}

# cuBLASLt: the toolkit's first, then the pip wheels' (nvidia.cublas for
# CUDA 12 wheels, nvidia/cu13 for CUDA 13 ones). Prints "LIBFILE INCDIR".
find_cublas() {
  local dirs=("$CUDA_HOME/lib64" "$CUDA_HOME/targets/x86_64-linux/lib" "$CUDA_HOME/lib"
              /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib)
  local pip
  pip=$(python3 - 2>/dev/null <<'EOF'
import importlib, os
for name in ("nvidia.cublas", "nvidia.cu13", "nvidia.cu12", "nvidia"):
    try:
        for p in importlib.import_module(name).__path__:
            print(p)
    except Exception:
        pass
EOF
)
  local p
  for p in $pip; do dirs+=("$p/lib" "$p/cublas/lib"); done
  local d lib inc
  for d in "${dirs[@]}"; do
    lib=$(ls "$d"/libcublasLt.so* 2>/dev/null | sort | tail -1)
    [ -n "$lib" ] || continue
    for inc in "$(dirname "$d")/include" "$CUDA_HOME/include" \
               "$CUDA_HOME/targets/x86_64-linux/include" /usr/local/cuda/include; do
      if [ -f "$inc/cublasLt.h" ]; then echo "$lib $inc"; return 0; fi
    done
  done
  return 1
}

{
  echo "nvcc: $NVCC ($("$NVCC" --version | tail -1))"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv 2>&1
} >"$OUT/build.log"
CUBLAS_FLAGS=(-DWORKBENCH_NO_CUBLAS)
if read -r CUBLAS_LIB CUBLAS_INC < <(find_cublas); then
  CUBLAS_DIR=$(dirname "$CUBLAS_LIB")
  CUBLAS_FLAGS=(-I"$CUBLAS_INC" -Xlinker "$CUBLAS_LIB" -Xlinker -rpath="$CUBLAS_DIR")
  export LD_LIBRARY_PATH="$CUBLAS_DIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  echo "cuBLASLt: $CUBLAS_LIB, headers $CUBLAS_INC" | tee -a "$OUT/build.log"
else
  echo "cuBLASLt: not found (no toolkit lib64, no pip nvidia wheel): the cuBLAS column stays empty" \
    | tee -a "$OUT/build.log"
fi

# Build every program at once (nvcc compiles one file on one core).
PROGRAMS=()
for f in "$SRC"/*.cu; do
  name=$(basename "$f" .cu)
  PROGRAMS+=("$name")
  "$NVCC" -std=c++17 -O3 -arch=sm_90 -lineinfo --resource-usage -I"$ROOT" "$f" \
    -o "$BUILD/$name" "${CUBLAS_FLAGS[@]}" >"$BUILD/$name.build.log" 2>&1 &
done
wait
for name in "${PROGRAMS[@]}"; do
  cat "$BUILD/$name.build.log" >>"$OUT/build.log"
  [ -x "$BUILD/$name" ] || { echo "kernels: $name did not build:"; grep -vE "^ptxas info|bytes stack frame|^$" "$BUILD/$name.build.log" | head -30; status=1; }
done
# 16-byte loads, and no local memory, in the machine code.
if command -v cuobjdump >/dev/null; then
  for name in "${PROGRAMS[@]}"; do
    [ -x "$BUILD/$name" ] || continue
    echo "$name: $(cuobjdump -sass "$BUILD/$name" | grep -cE 'LDG\.E\.128|LDG\.E\.EF\.128|LDG\.E\.[A-Z.]*128') 128-bit global loads," \
      "$(cuobjdump -sass "$BUILD/$name" | grep -cE '\b(LDL|STL)\b') local-memory accesses" >>"$OUT/build.log"
  done
fi
grep -E "spill stores" "$OUT/build.log" | grep -v " 0 bytes spill stores" | sort | uniq -c | sed 's/^/spills: /' >>"$OUT/build.log"

LOGS=()
for name in "${PROGRAMS[@]}"; do LOGS+=("$OUT/$name.log"); done
ARGS=()
[ "${QUICK:-0}" = 1 ] && ARGS+=(--quick)
[ -n "${FILTER:-}" ] && ARGS+=("--filter=$FILTER")
for name in "${PROGRAMS[@]}"; do
  [ -x "$BUILD/$name" ] || continue
  if ! timeout "${TIMEOUT_S:-140}" "$BUILD/$name" "${ARGS[@]}" >"$OUT/$name.log" 2>&1; then
    echo "kernels: $name exited with an error:"; grep -v "^row" "$OUT/$name.log" | tail -5
    status=1
  fi
done

# The table: every program's rows.
{
  cat "${LOGS[@]}" 2>/dev/null | grep "^# device" | head -1
  echo
  echo "| kernel | version | shape | batch | dtype | max err | ok? | µs | GB/s | % of floor | cuBLAS µs |"
  echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
  for name in "${PROGRAMS[@]}"; do
    [ -f "$OUT/$name.log" ] && grep "^row" "$OUT/$name.log" | cut -f2- | sed 's/\t/ | /g; s/^/| /; s/$/ |/'
  done
} >"$OUT/kernels.md"
cat "$OUT/kernels.md"

# The short form: bf16, each shape and batch, the fastest version that
# passed, against cuBLASLt.
echo
echo "## bf16: fastest passing version against cuBLASLt"
echo
echo "| kernel | shape | batch | best version | µs | % of floor | cuBLAS µs | speed-up |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
cat "${LOGS[@]}" 2>/dev/null | awk -F'\t' '$1 == "row" && $6 == "bf16" && $8 == "ok" && $3 != "cublasLt" {
    key = $2 "\t" $4 "\t" $5
    if (!(key in best) || $9 + 0 < best[key] + 0) { best[key] = $9; ver[key] = $3; pct[key] = $11; cub[key] = $12 }
    if (!(key in order)) { order[key] = ++n; keys[n] = key }
  }
  END {
    for (i = 1; i <= n; ++i) {
      k = keys[i]; split(k, f, "\t")
      speed = (cub[k] != "-" && best[k] > 0) ? sprintf("%.2fx", cub[k] / best[k]) : "-"
      printf "| %s | %s | %s | %s | %s | %s | %s | %s |\n", f[1], f[2], f[3], ver[k], best[k], pct[k], cub[k], speed
    }
  }'
fails=$(cat "${LOGS[@]}" 2>/dev/null | awk -F'\t' '$1 == "row" && $8 == "FAIL"' | wc -l)
echo
echo "rows: $(cat "${LOGS[@]}" 2>/dev/null | grep -c '^row'), checks failed: $fails (logs, table, build report: \$OUT)"
[ "$fails" = 0 ] || status=1
exit $status
