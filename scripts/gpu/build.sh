#!/usr/bin/env bash
# Builds nanoserve with CUDA against the GPU machine's LibTorch into build-gpu/.
source "$(dirname "$0")/env.sh"
cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DNANOSERVE_UNITY="${NANOSERVE_UNITY:-ON}" \
  -DCMAKE_PREFIX_PATH="/opt/deps/usr;$TORCH_PREFIX" -DCMAKE_CUDA_ARCHITECTURES=90 \
  -Dnlohmann_json_DIR=/opt/deps/usr/share/cmake/nlohmann_json >"$OUT/configure.log" 2>&1 \
  || { tail -40 "$OUT/configure.log"; exit 1; }
cmake --build "$BUILD" -j"$(nproc)" >"$OUT/build.log" 2>&1 || { grep -E "error|Error" -A3 "$OUT/build.log" | head -60; exit 1; }
echo "build-gpu: ok"
