#!/usr/bin/env bash
# Formats the C++ and CUDA sources with clang-format (.clang-format: Google style,
# 100 columns). --check: change nothing, list the files that would change,
# exit 1 if any.
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t files < <(git ls-files '*.cc' '*.h' '*.cu' '*.cuh' | grep -v '^tests/data/')
if [ "${1:-}" = "--check" ]; then
  bad=()
  for f in "${files[@]}"; do
    clang-format "$f" | cmp -s - "$f" || bad+=("$f")
  done
  ((${#bad[@]} == 0)) || { printf 'not formatted: %s\n' "${bad[@]}"; exit 1; }
  echo "format: ${#files[@]} files ok"
else
  clang-format -i "${files[@]}"
fi
