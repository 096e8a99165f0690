#!/usr/bin/env bash
# The GPU image's build stage (deploy/Dockerfile.gpu): the build tools and
# libraries, by the package names that Ubuntu 24.04 (the CUDA images) and
# Debian 12 share, then LibTorch:
#   install_deps.sh pip       (default) PyTorch $TORCH_VERSION from $TORCH_INDEX_URL in a venv
#                             at /opt/torch: the CUDA LibTorch that scripts/gpu/build.sh
#                             builds against (PyTorch 2.11, CUDA 13.0, shared/GPU.md)
#   install_deps.sh debian    Debian's CPU LibTorch 1.13 instead: the stand-in that lets a
#                             machine without a GPU or the PyTorch index check the recipe
# Writes the folder for CMAKE_PREFIX_PATH to /opt/torch/prefix (pip: and its
# site-packages folder to /opt/torch/site).
set -euo pipefail
MODE=${1:-pip}
export DEBIAN_FRONTEND=noninteractive
PKGS=(build-essential cmake ninja-build pkg-config ccache python3 python3-venv
      libgrpc++-dev libgrpc-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
      libabsl-dev nlohmann-json3-dev libpcre2-dev libcpp-httplib-dev libmicrohttpd-dev)
[ "$MODE" = debian ] && PKGS+=(libtorch-dev libopenblas0-pthread)
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${PKGS[@]}"
rm -rf /var/lib/apt/lists/*
mkdir -p /opt/torch
case "$MODE" in
  pip)
    python3 -m venv /opt/torch/venv
    /opt/torch/venv/bin/pip install --no-cache-dir "torch==${TORCH_VERSION:?}" \
      --index-url "${TORCH_INDEX_URL:?}"
    /opt/torch/venv/bin/python -c 'import torch; print(torch.utils.cmake_prefix_path)' >/opt/torch/prefix
    # site-packages: torch/lib and nvidia/*/lib, the libraries the runtime stage copies
    /opt/torch/venv/bin/python -c 'import site; print(site.getsitepackages()[0])' >/opt/torch/site
    ;;
  debian)
    echo /usr/lib/x86_64-linux-gnu/cmake >/opt/torch/prefix
    ;;
  *) echo "usage: install_deps.sh pip|debian" >&2; exit 2 ;;
esac
echo "install_deps: LibTorch prefix $(cat /opt/torch/prefix)"
