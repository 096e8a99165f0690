#!/usr/bin/env bash
# Installs what a fresh Debian 12 machine lacks to build, run and test nanoserve,
# and fetches the GPT-2 vocabulary. Safe to run again: each step checks first.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(build-essential cmake pkg-config
      libtorch-dev libopenblas0-pthread
      libgrpc++-dev libgrpc-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
      libabsl-dev libgtest-dev libgmock-dev googletest
      nlohmann-json3-dev libpcre2-dev libcpp-httplib-dev gnuplot-nox
      clang-14 libclang-rt-14-dev  # the fuzzers: clang, libFuzzer and its sanitizer runtimes
      openssl)  # the TLS integration tests make a throwaway CA and certificates

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
command -v npm >/dev/null 2>&1 || missing+=(npm)
if ((${#missing[@]})); then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

scripts/fetch_vocab.sh
